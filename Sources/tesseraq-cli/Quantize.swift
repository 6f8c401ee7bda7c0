import ArgumentParser
import Foundation
import TesseraQ

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Quantize a checkpoint and write a GPTQ (gptq_v2) packed checkpoint.",
        discussion: """
            Every option maps to a key of the JSON configuration tq_quantize takes; --set adds any other key (value \
            parsed as JSON when it can be, else taken as a string). The calibration options (--calib-tokens, \
            --calib-text, --preset) are accepted for every method, so one command line serves a loop over methods; \
            rtn does not calibrate and says so. A preset whose windows are longer than the model's context \
            calibrates on windows of the context length unless seq_len is set (--set seq_len=N).

            Examples:
              tesseraq quantize --model DIR --out OUT --method rtn --bits 4 \\
                  --group-size -1
              tesseraq quantize --model DIR --out OUT --method rtn --bits 3 \\
                  --group-size 32 --calib-text valid.txt
              tesseraq quantize --model DIR --out OUT --method gptq --bits 3 \\
                  --group-size 32 --calib-text valid.txt
              tesseraq quantize --model DIR --out OUT --method awq --bits 4 \\
                  --group-size 32 --preset ci --calib-text valid.txt --threads -1
              tesseraq quantize --model DIR --out OUT --method tesseraq --bits 2 \\
                  --group-size 64 --preset fast --set init=rtn --calib-text valid.txt
              tesseraq quantize --model DIR --out OUT --method lwc --bits 2 \\
                  --group-size 32 --preset ci --calib-text valid.txt
              tesseraq quantize --model DIR --out OUT --method tesseraq --bits 4 \\
                  --group-size -1 --a-bits 4 --rotate hadamard --set init=rtn \\
                  --calib-text valid.txt
            """)

    @Option(help: "Input checkpoint directory (Hugging Face, float weights).")
    var model: String

    @Option(help: "Output directory (written under <out>.partial and renamed when complete).")
    var out: String

    @Option(help: "Method: \(QuantizeConfig.methods.joined(separator: ", ")).")
    var method = "rtn"

    @Option(help: "Bits per weight: 2, 3, 4 or 8.")
    var bits = 4

    // .unconditional: "-1" is a value here, not an option.
    @Option(name: .customLong("group-size"), parsing: .unconditional, help: "Columns per quantization group; -1 for per-channel.")
    var groupSize = 128

    @Flag(help: "Symmetric grid (zero point 2^(bits-1)) instead of the default asymmetric one.")
    var sym = false

    @Option(help: "Checkpoint format: gptq_v2 (default) or gptq (v1, refuses zero points of 0).")
    var format = "gptq_v2"

    @Option(name: .customLong("calib-tokens"), help: "Calibration tokens (little-endian uint32 file) for calibrated methods.")
    var calibTokens: String?

    @Option(name: .customLong("calib-text"), help: "Calibration text (UTF-8), encoded as one string with the model's tokenizer.json.")
    var calibText: String?

    @Option(help: "Preset of a calibrated method: ci, fast or paper (defaults: tesseraq fast, awq and gptq paper; README gives their cost).")
    var preset: String?

    @Option(name: .customLong("a-bits"), help: "Bits of every block linear's input, fake-quantized per token: 3, 4, 6, 8 (default 16: float).")
    var aBits: Int?

    @Option(name: .customLong("kv-bits"), help: "Bits of the KV cache, per head of each token: 4 or 8 (default 16: float).")
    var kvBits: Int?

    @Option(help: "Rotation before quantizing: none (default) or hadamard (QuaRot).")
    var rotate: String?

    @Option(name: .customLong("set"), parsing: .singleValue, help: "Extra configuration key=value (repeatable).")
    var settings: [String] = []

    @Flag(help: "Replace an existing output directory.")
    var overwrite = false

    @Option(parsing: .unconditional, help: "OpenMP threads (0 or negative = one per core).")
    var threads = 0

    @Flag(help: "Print the run report as JSON.")
    var json = false

    /// RTN reads no calibration: the calibration options are dropped for it, with a notice.
    var calibrates: Bool { method != "rtn" }

    func configJSON() throws -> String {
        var config: [String: Any] = ["method": method, "bits": bits, "group_size": groupSize, "sym": sym, "format": format,
                                     "overwrite": overwrite]
        if calibrates, let calibTokens { config["calib_tokens"] = calibTokens }
        if calibrates, let preset { config["preset"] = preset }
        if let aBits { config["a_bits"] = aBits }
        if let kvBits { config["kv_bits"] = kvBits }
        if let rotate { config["rotate"] = rotate }
        for s in settings {
            guard let eq = s.firstIndex(of: "=") else { throw ValidationError("--set expects key=value, got \(s)") }
            let key = String(s[..<eq]), raw = String(s[s.index(after: eq)...])
            config[key] = (try? JSONSerialization.jsonObject(with: Data(raw.utf8), options: [.fragmentsAllowed])) ?? raw
        }
        return String(decoding: try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]), as: UTF8.self)
    }

    func run() throws {
        let text = try configJSON()
        try runReportingErrors {
            Runtime.setThreads(threads)
            // Under mpirun every rank runs this command; rank 0 speaks for the job.
            let root = try Communicator.joinWorld().isRoot
            var config = try QuantizeConfig.parse(text)
            let m = try LlamaModel(directory: model)
            try config.fit(to: m.config)
            let ignored = [("--calib-tokens", calibTokens), ("--calib-text", calibText), ("--preset", preset)]
                .filter { $0.1 != nil }.map(\.0)
            if root && !calibrates && !ignored.isEmpty {
                note("rtn does not calibrate: \(ignored.joined(separator: ", ")) ignored")
            }
            if root { config.notices.forEach(note) }
            let calibration = try calibrates ? calibText.map { try Tokenizer(path: model).encode(file: $0) } : nil
            if root, calibrates, let estimate = try? QuantizeConfig.memoryEstimate(config, model: m) {
                note(estimate.summary)
            }
            let bar = ProgressBar("quantize")
            let report = try quantizeModel(m, config: config, outDir: out, calibration: consume calibration) { p in
                let detail = p.rounds == 0 ? "block \(p.block + 1)/\(p.blocks)"
                    : String(format: "block %d/%d round %d/%d step %d loss %.4g", p.block + 1, p.blocks, p.round, p.rounds, p.step, p.loss)
                if root { bar.update(Int(p.fraction * 1000), 1000, detail: detail) }
                return !interrupted
            }
            if root { if json { printJSON(report) } else { print("wrote \(out)") } }
        }
    }
}
