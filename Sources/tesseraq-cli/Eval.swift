import ArgumentParser
import Foundation
import TesseraQ

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure perplexity (ALGORITHM.md section 5) of a checkpoint on a token file.",
        discussion: """
            Examples:
              tesseraq eval --model DIR --text test.raw.txt --seq-len 512 --max-windows 4
              tesseraq eval --model DIR --text test.raw.txt --seq-len 256 \\
                  --max-windows 2 --json --threads -1
            """)

    @Option(help: "Checkpoint directory (Hugging Face float or GPTQ packed).")
    var model: String

    @Option(help: "Little-endian uint32 token file.")
    var tokens: String?

    @Option(help: "A UTF-8 text file, encoded as one string with the model's tokenizer.json (instead of --tokens).")
    var text: String?

    @Option(help: "tokenizer.json (or a directory holding one) for --text; default: the model's directory.")
    var tokenizer: String?

    @Option(name: .customLong("seq-len"), help: "Window length in tokens (at most the model's context).")
    var seqLen: Int

    @Option(name: .customLong("max-windows"), help: "Evaluate at most this many windows (0 = all).")
    var maxWindows: Int = 0

    @Option(parsing: .unconditional, help: "OpenMP threads (0 or negative = one per core).")
    var threads: Int = 0

    @OptionGroup var open: ModelOpenOptions

    @Flag(help: "Print one JSON object: perplexity, tokens, windows, seconds.")
    var json = false

    func run() throws {
        try runReportingErrors {
            Runtime.setThreads(threads)
            let m = try open.open(model)
            let ids = try tokenInput(tokens: tokens, text: text, tokenizer: tokenizer ?? model, what: "--tokens or --text")
            let bar = ProgressBar("eval")
            let r = try ids.withUnsafeBufferPointer {
                try evaluatePerplexity(model: m, tokens: $0, seqLen: seqLen, maxWindows: maxWindows) { done, total in
                    bar.update(done, total)
                    return !interrupted
                }
            }
            if json {
                printJSON(["perplexity": r.perplexity, "tokens": r.tokens, "windows": r.windows, "seconds": r.seconds])
            } else {
                print(String(format: "perplexity %.4f over %d windows of %d (%d predicted tokens) in %.1fs",
                             r.perplexity, r.windows, seqLen, r.tokens, r.seconds))
            }
        }
    }
}
