/// Progress of a long job: `report(done, total)` returns false when the caller wants to stop.
public typealias ProgressHandler = (_ done: Int, _ total: Int) -> Bool

func checkProgress(_ handler: ProgressHandler?, _ done: Int, _ total: Int) throws {
    if let handler, !handler(done, total) {
        throw TQError(.cancelled, "cancelled by the progress callback at \(done)/\(total)")
    }
}
