/// Sizes computed from user-given counts (n_samples, seq_len, batch have no upper bound): an
/// overflowing product or sum saturates at Int.max, so an absurd request is refused as too large
/// by the memory check instead of trapping the process.
func saturatingProduct(_ factors: Int...) -> Int {
    var p = 1
    for f in factors {
        let (r, overflow) = p.multipliedReportingOverflow(by: f)
        if overflow { return Int.max }
        p = r
    }
    return p
}

/// The sum of non-negative sizes, saturating at Int.max (see saturatingProduct).
func saturatingSum(_ terms: Int...) -> Int {
    var s = 0
    for t in terms {
        let (r, overflow) = s.addingReportingOverflow(t)
        if overflow { return Int.max }
        s = r
    }
    return s
}
