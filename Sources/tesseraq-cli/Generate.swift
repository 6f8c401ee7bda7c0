import ArgumentParser
import Foundation
import TesseraQ

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt with a KV-cached session (packed checkpoints stay packed).",
        discussion: """
            Streams the text to stdout as it is produced and ends with one line on stderr: prompt and
            generated tokens per second, peak resident memory, and the memory budget it is measured
            against (weights + KV cache + one layer's activations). Greedy unless --temperature > 0.
            Stops at the model's eos_token_id (and <|im_end|> with --chat) or after --max-tokens.

            Examples:
              tesseraq generate --model DIR --prompt "Once upon a time" --max-tokens 32
              tesseraq generate --model DIR --prompt "The little dog" --max-tokens 48 \\
                  --temperature 0.8 --top-k 40 --top-p 0.95 \\
                  --repetition-penalty 1.1 --seed 7 --json
            """)

    @Option(help: "Checkpoint directory (Hugging Face float or GPTQ packed) with its tokenizer.json.")
    var model: String

    @Option(help: "The prompt text.")
    var prompt: String?

    @Option(name: .customLong("prompt-file"), help: "A UTF-8 file holding the prompt (instead of --prompt).")
    var promptFile: String?

    @Option(name: .customLong("max-tokens"), help: "Generate at most this many tokens.")
    var maxTokens: Int = 128

    @Option(parsing: .unconditional, help: "Sampling temperature (0 or below: greedy).")
    var temperature: Float = 0

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Keep the k most likely tokens (0: off).")
    var topK: Int = 0

    @Option(name: .customLong("top-p"), help: "Keep the most likely tokens up to this probability mass (1: off).")
    var topP: Float = 1

    @Option(name: .customLong("repetition-penalty"), help: "Penalty on tokens already seen (1: off).")
    var repetitionPenalty: Float = 1

    @Option(help: "Seed of the sampler's generator.")
    var seed: UInt64 = 0

    @Flag(help: "Wrap the prompt in the model's ChatML chat template (SmolLM2, Qwen2); other templates are refused.")
    var chat = false

    @Flag(help: "Print one JSON object (text and figures) instead of streaming the text.")
    var json = false

    @Option(parsing: .unconditional, help: "OpenMP threads (0 or negative = one per core).")
    var threads: Int = 0

    @OptionGroup var open: ModelOpenOptions

    func run() throws {
        try runReportingErrors {
            Runtime.setThreads(threads)
            let text: String
            switch (prompt, promptFile) {
            case (let p?, nil): text = p
            case (nil, let f?):
                guard let data = FileManager.default.contents(atPath: f) else { throw TQError(.io, "\(f): cannot read the prompt file") }
                text = String(decoding: data, as: UTF8.self)
            default: throw TQError(.invalidArgument, "give exactly one of --prompt or --prompt-file")
            }
            guard maxTokens > 0 else { throw TQError(.invalidArgument, "--max-tokens must be positive (got \(maxTokens))") }
            let tokenizer = try Tokenizer(path: model)
            // What the process holds before the model: the runtime and the tokenizer, outside the budget.
            let baseline = peakRSS()
            let m = try open.open(model)
            let ids = try tokenizer.encode(chat ? try Generation.chatPrompt(directory: model, prompt: text) : text)
            let stop = Set(try Generation.stopTokens(directory: model, tokenizer: tokenizer, chat: chat))
            let capacity = min(ids.count + maxTokens, m.config.maxPositions)
            guard ids.count < capacity else {
                throw TQError(.invalidArgument, "the prompt's \(ids.count) tokens leave no room in the model's \(m.config.maxPositions) positions")
            }
            let session = try DecodingSession(model: m, capacity: capacity)
            let sampler = try Sampler(temperature: temperature, topK: topK, topP: topP, repetitionPenalty: repetitionPenalty, seed: seed)
            var output = ""
            let r = try Generation.run(session: session, sampler: sampler, tokenizer: tokenizer, prompt: ids, maxNew: maxTokens,
                                       stop: stop, cancelled: { interrupted }) { piece in
                output += piece
                if !json {
                    FileHandle.standardOutput.write(Data(piece.utf8))
                }
            }
            let peak = peakRSS()
            let budget = session.weightBytes + session.kvCacheBytes + session.activationBytes
            let promptRate = Double(ids.count) / max(r.promptSeconds, 1e-9)
            let genRate = Double(r.tokens.count) / max(r.generateSeconds, 1e-9)
            if json {
                printJSON(["text": output, "prompt_tokens": ids.count, "generated_tokens": r.tokens.count,
                           "prompt_tokens_per_second": promptRate, "generated_tokens_per_second": genRate,
                           "peak_rss_bytes": peak, "baseline_rss_bytes": baseline, "kv_cache_bytes": session.kvCacheBytes,
                           "weight_bytes": session.weightBytes, "activation_bytes": session.activationBytes,
                           "budget_bytes": budget, "stop_reason": r.stop.rawValue])
            } else {
                print()
                let mib = { (b: Int) in String(format: "%.1f", Double(b) / 1_048_576) }
                FileHandle.standardError.write(Data((String(format: "prompt: %d tokens, %.1f tok/s · generated: %d tokens, %.1f tok/s",
                                                            ids.count, promptRate, r.tokens.count, genRate)
                    + " · peak memory: \(mib(peak)) MiB (budget \(mib(budget)) MiB: weights \(mib(session.weightBytes)), "
                    + "KV cache \(mib(session.kvCacheBytes)), activations \(mib(session.activationBytes)); "
                    + "runtime and tokenizer before the model \(mib(baseline)) MiB)\n").utf8))
            }
        }
    }

    /// Peak resident set size of the process so far, in bytes (getrusage's ru_maxrss is in KiB on Linux).
    func peakRSS() -> Int {
        var usage = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
        return usage.ru_maxrss * 1024
    }
}
