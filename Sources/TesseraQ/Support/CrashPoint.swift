import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Fault injection for the kill tests: with TESSERAQ_CRASH_AT=<point> the process SIGKILLs itself
/// when it reaches that point of a checkpoint write, the short moments a randomly timed kill
/// rarely hits. Nothing happens without the variable.
enum CrashPoint: String {
    /// model.safetensors half written in the staging directory.
    case checkpointWrite = "checkpoint-write"
    /// The staging directory holds the complete checkpoint and nothing else; about to be renamed.
    case checkpointRename = "checkpoint-rename"

    private static let armed = ProcessInfo.processInfo.environment["TESSERAQ_CRASH_AT"].flatMap(CrashPoint.init(rawValue:))

    func reach() {
        if Self.armed == self { kill(getpid(), SIGKILL) }
    }
}
