import ArgumentParser
import Foundation
import TesseraQ

@main
struct TesseraQCLI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tesseraq",
        abstract: "Ultra-low-bit post-training quantization of LLaMA-family models (TesseraQ).",
        version: Runtime.version,
        subcommands: [Eval.self, Quantize.self, Inspect.self, Generate.self]
    )

    static func main() {
        installInterruptHandler()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
