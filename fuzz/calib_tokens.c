// Fuzz target (f): the calibration token file (little-endian uint32 ids, calib_tokens). The input
// is the file a GPTQ run on the tiny model reads (two windows of 8 tokens); the run is cancelled at
// its first progress report, so each input costs at most one small block.
#include <stdint.h>
#include <stdio.h>

#include "support.h"
#include "tesseraq.h"

static tq_model *tiny;
static char config[1024];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    tq_set_num_threads(1);
    tiny = open_fixture_model(TINY_MODEL);
    snprintf(config, sizeof config,
             "{\"method\": \"gptq\", \"bits\": 4, \"group_size\": 8, \"n_samples\": 2, \"seq_len\": 8, \"calib_tokens\": \"%s\"}",
             scratch_path(0, "calib.bin"));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    write_file(scratch_path(0, "calib.bin"), data, size);
    const char *out = scratch_path(1, "out");
    remove_tree(out);
    remove_tree(scratch_path(2, "out.partial"));
    check_status(tq_quantize(tiny, config, out, cancel_at_first_progress, NULL), "tq_quantize");
    return 0;
}
