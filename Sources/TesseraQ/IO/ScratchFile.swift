#if canImport(Glibc)
import Glibc
#endif

/// A new file of `size` bytes mapped read-write and shared, for data larger than the memory it may
/// use (the out-of-core activation cache). The file is unlinked at once, so nothing is left behind
/// after a crash; its pages go to disk under memory pressure, and `release` drops them from the
/// process's resident set after each use (the data stays in the page cache or on disk).
final class ScratchFile: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let size: Int

    /// Creates the file in `directory` (which must exist); zero-filled.
    init(directory: String, size: Int) throws {
        var template = Array((directory + "/tq-cache-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw TQError.io("\(directory): cannot create a scratch file (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
        self.size = max(size, 1)
        guard ftruncate(fd, off_t(self.size)) == 0 else {
            throw TQError.io("\(directory): cannot size a scratch file of \(self.size) bytes (\(String(cString: strerror(errno))))")
        }
        guard let p = mmap(nil, self.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw TQError.io("\(directory): mmap of a scratch file failed (\(String(cString: strerror(errno))))")
        }
        base = p
    }

    /// Drops bytes [begin, end) (whole pages) from the resident set; shared file pages keep their data.
    func release(_ begin: Int, _ end: Int) { releasePages(base, size: size, begin, end) }

    deinit { munmap(base, size) }
}
