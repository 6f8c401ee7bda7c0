#if canImport(Glibc)
import Glibc
#endif

/// A read-only memory map of a whole file; unmapped on deinit.
final class MappedFile: @unchecked Sendable {
    let path: String
    let base: UnsafeRawPointer
    let size: Int

    init(path: String) throws {
        self.path = path
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (fstat below
        // refuses it); it changes nothing for regular files.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw TQError.io("\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TQError.io("\(path): cannot stat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw TQError.io("\(path): not a regular file") }
        size = Int(st.st_size)
        if size == 0 {
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 8))
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw TQError.io("\(path): mmap failed (\(String(cString: strerror(errno))))")
        }
        base = UnsafeRawPointer(p)
    }

    /// Drops the resident pages of bytes [begin, end) (whole pages within the map): a tensor copied
    /// out of the map no longer counts in the process's memory twice. Later reads fault the pages
    /// back in from the page cache, so this is safe while other threads read the same bytes.
    func release(_ begin: Int, _ end: Int) {
        guard size > 0 else { return }
        releasePages(UnsafeMutableRawPointer(mutating: base), size: size, begin, end)
    }

    deinit {
        if size == 0 {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        } else {
            munmap(UnsafeMutableRawPointer(mutating: base), size)
        }
    }
}

/// madvise(MADV_DONTNEED) on the pages around bytes [begin, end) of a map of `size` bytes at `base`,
/// widened to whole 2 MiB spans: a fault maps the page cache's pages around the one touched as well
/// (fault-around, and whole large folios, which reach 2 MiB on x86-64 ext4), so dropping only the
/// pages read left their neighbours resident: 10 MiB of SmolLM2's map by its last block.
/// Dropping a neighbour still in use only costs a minor fault; shared file pages keep their data.
func releasePages(_ base: UnsafeMutableRawPointer, size: Int, _ begin: Int, _ end: Int) {
    let span = 2 << 20
    let lo = begin / span * span, hi = min((end + span - 1) / span * span, (size + pageSize - 1) / pageSize * pageSize)
    guard hi > lo else { return }
    madvise(base + lo, hi - lo, MADV_DONTNEED)
}

private let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
