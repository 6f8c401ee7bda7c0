// What every libFuzzer harness of fuzz/ shares: a private scratch folder for the files a fuzzed
// input becomes (the C ABI opens paths, not buffers), paths to the committed fixtures, and the
// check of the C ABI's error contract that turns a broken contract into a crash libFuzzer reports.
#pragma once

#include <stddef.h>
#include <stdint.h>

// The repository root (scripts/fuzz.sh passes it as -DTQ_REPO=...): the harnesses read
// Tests/Fixtures and fuzz/fixtures below it.
#ifndef TQ_REPO
#error "build with -DTQ_REPO=\"<repository root>\" (scripts/fuzz.sh does)"
#endif

// A path inside this process's scratch folder (created on first use, removed at exit).
// Returned in a static buffer per slot: slot 0..3 may be held at once.
const char *scratch_path(int slot, const char *name);

// The input as a NUL-terminated string (a copy to free; any NUL inside ends it early, as C sees it).
char *input_string(const uint8_t *data, size_t size);

// Replaces the file at path with size bytes of data; aborts when it cannot (a harness fault).
void write_file(const char *path, const uint8_t *data, size_t size);

// Removes path and everything under it, if it exists.
void remove_tree(const char *path);

// Makes link a symbolic link to target, replacing what was there.
void link_file(const char *target, const char *link);

// Opens a model directory of the repository (path relative to TQ_REPO); aborts when it cannot.
struct tq_model *open_fixture_model(const char *relative);

// The model folder of the model harnesses: scratch "model/" holding a link named link_name to the
// fixture file target. Called once, from LLVMFuzzerInitialize (it also sets one kernel thread).
void stage_model_folder(const char *target, const char *link_name);

// Writes the input as the file name of that folder and opens the folder with tq_model_open, the
// status checked: the model, or NULL when it was refused.
struct tq_model *open_staged_model(const char *name, const uint8_t *data, size_t size);

// The tiny model (fuzz/fixtures/tiny-llama: one layer, hidden 8, 32 tokens and positions).
#define TINY_MODEL "fuzz/fixtures/tiny-llama"

// A tq_quant_progress_fn that cancels at its first call: with it a fuzzed quantization does at
// most the work before the first progress report (one block).
int32_t cancel_at_first_progress(int64_t block, int64_t n_blocks, int64_t round, int64_t step, double loss, void *user);

// Aborts (a crash for libFuzzer) unless status is TQ_OK or a documented error status other than
// TQ_ERR_INTERNAL, with tq_last_error() saying something on failure and nothing on success.
void check_status(int32_t status, const char *call);
