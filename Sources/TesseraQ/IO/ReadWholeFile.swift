import Foundation

/// The whole content of a regular file, or nil when it is missing, unreadable or not a regular
/// file (a FIFO or a device such as /dev/zero would block or never end). The readers of untrusted
/// files use it instead of FileManager.contents(atPath:), which on Linux leaks a 4 KB buffer for
/// every empty file it reads (FoundationEssentials; LeakSanitizer under fuzz/config_json.c).
func readWholeFile(_ path: String) -> Data? {
    guard let map = try? MappedFile(path: path) else { return nil }
    return Data(bytes: map.base, count: map.size)
}
