import TQKernels

/// The collectives tensor-parallel training uses over the ranks of one job: MPI's (`Communicator`),
/// or, in the tests, threads of one process standing in for ranks.
protocol Collectives: Sendable {
    var rank: Int { get }
    var size: Int { get }
    /// x <- the sum of every rank's x, in place; every rank gets the same bits.
    func allReduce(_ x: UnsafeMutablePointer<Float>, count: Int)
    func allReduce(_ x: [Double]) -> [Double]
    /// Every rank's bytes, in rank order.
    func allGather(_ bytes: [UInt8]) -> [[UInt8]]
}

extension Collectives {
    func allGather<T: BitwiseCopyable>(_ values: [T]) -> [[T]] {
        allGather(values.withUnsafeBytes { Array($0) }).map { b in
            b.withUnsafeBytes { Array($0.bindMemory(to: T.self)) }
        }
    }
}

/// The MPI job this process belongs to (tq_mpi.h): under `mpirun -np P` a world of P ranks, else a
/// world of one in which every collective is a copy. MPI is joined inside the library, on the first
/// call of `joinWorld` (a quantization run), and left at exit.
public struct Communicator: Collectives {
    public let rank: Int
    public let size: Int

    /// The world as this process joined it (one rank before `joinWorld`).
    public static var world: Communicator { Communicator(rank: Int(tqk_mpi_rank()), size: Int(tqk_mpi_size())) }

    /// Joins the MPI job when launched under mpirun.
    @discardableResult
    public static func joinWorld() throws -> Communicator {
        guard tqk_mpi_init() == 0 else { throw TQError.io(String(cString: tqk_mpi_error())) }
        return world
    }

    public var isRoot: Bool { rank == 0 }

    public func allReduce(_ x: UnsafeMutablePointer<Float>, count: Int) {
        check(tqk_mpi_allreduce_f32(x, Int64(count)))
    }

    func allReduce(_ x: [Double]) -> [Double] {
        var y = x
        check(tqk_mpi_allreduce_f64(&y, Int64(y.count)))
        return y
    }

    func allGather(_ bytes: [UInt8]) -> [[UInt8]] {
        let counts = allReduce((0..<size).map { $0 == rank ? Double(bytes.count) : 0 }).map { Int64($0) }
        var displs = [Int64](repeating: 0, count: size)
        for r in 1..<max(size, 1) { displs[r] = displs[r - 1] + counts[r - 1] }
        var all = [UInt8](repeating: 0, count: Int(counts.reduce(0, +)))
        check(tqk_mpi_allgatherv(bytes, Int64(bytes.count), &all, counts, displs))
        return (0..<size).map { Array(all[Int(displs[$0])..<Int(displs[$0] + counts[$0])]) }
    }

    func barrier() { check(tqk_mpi_barrier()) }

    /// Ends every rank of the job (a failed rank must not leave the others waiting in a collective).
    func abort(code: Int32) -> Never {
        tqk_mpi_abort(code)
        fatalError("unreachable")
    }

    /// MPI's default error handler already ends the job on failure; a code that still comes back
    /// leaves the ranks out of step, so nothing can continue.
    private func check(_ rc: Int32) {
        if rc != 0 { tqk_mpi_abort(70) }
    }
}
