import ArgumentParser
import Foundation
import TesseraQ

/// Exit codes: 0 success, 2 bad input (arguments, files, formats), 3 failure while running,
/// 4 cancelled. ArgumentParser itself uses 64 for usage errors.
enum ExitStatus {
    static func code(for error: TQError) -> Int32 {
        switch error.kind {
        case .invalidArgument, .io, .format, .unsupported: 2
        case .cancelled: 4
        default: 3
        }
    }
}

/// Runs `body`; a TQError is printed to stderr and turned into the matching exit code.
func runReportingErrors(_ body: () throws -> Void) throws {
    do { try body() } catch let e as TQError {
        FileHandle.standardError.write(Data("error: \(e.message)\n".utf8))
        throw ExitCode(ExitStatus.code(for: e))
    }
}

extension ModelOptions.LMHead: ExpressibleByArgument {}

/// --lm-head, shared by the commands that run a model.
struct ModelOpenOptions: ParsableArguments {
    @Option(name: .customLong("lm-head"),
            help: "The LM head: checkpoint (as stored) or w8 (rounded to 8 bits, groups of 128, and packed: half a bf16 head's bytes per decoding step, as llama.cpp's Q4_0 holds its head in Q8_0).")
    var lmHead: ModelOptions.LMHead = .checkpoint

    func open(_ directory: String) throws -> LlamaModel {
        try LlamaModel(directory: directory, options: ModelOptions(lmHead: lmHead))
    }
}

/// A one-line message on stderr, apart from the command's output.
func note(_ message: String) {
    FileHandle.standardError.write(Data("note: \(message)\n".utf8))
}

func printJSON(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// A one-line progress bar on stderr, redrawn in place when stderr is a terminal.
final class ProgressBar {
    let label: String
    let isTTY = isatty(STDERR_FILENO) != 0
    let start = Date()
    var lastDraw = Date.distantPast

    init(_ label: String) { self.label = label }

    func update(_ done: Int, _ total: Int, detail: String = "") {
        let now = Date()
        // Redraw a terminal often; write a log (non-terminal) line at most every 5 s.
        guard done == total || now.timeIntervalSince(lastDraw) > (isTTY ? 0.1 : 5) else { return }
        lastDraw = now
        let width = 30
        let filled = total > 0 ? width * done / total : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = String(format: "%@ [%@] %d/%d %.0fs %@", label, bar, done, total, now.timeIntervalSince(start), detail)
        FileHandle.standardError.write(Data(((isTTY ? "\r" : "") + line + (isTTY && done < total ? "" : "\n")).utf8))
    }
}

/// Set by SIGINT (Ctrl-C) and SIGTERM (kill, a job scheduler): long jobs poll it through their
/// progress callback and cancel cleanly (exit status 4), leaving a quantization's `.partial`
/// state ready to resume.
nonisolated(unsafe) var interrupted = false

func installInterruptHandler() {
    signal(SIGINT) { _ in interrupted = true }
    signal(SIGTERM) { _ in interrupted = true }
}

/// Tokens from a token file or from a text file encoded as one string (`tokenizers` defaults).
func tokenInput(tokens: String?, text: String?, tokenizer: String, what: String) throws -> [UInt32] {
    switch (tokens, text) {
    case (let t?, nil): return try readTokenFile(t)
    case (nil, let x?): return try Tokenizer(path: tokenizer).encode(file: x)
    default: throw TQError(.invalidArgument, "give exactly one of \(what)")
    }
}
