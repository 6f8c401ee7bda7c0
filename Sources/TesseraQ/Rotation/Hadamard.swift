import TQKernels

/// An orthonormal Hadamard transform of `size` = m 2^k inputs: H = H_m (x) H_(2^k) / sqrt(size), with
/// H_(2^k) Sylvester's (fast Walsh-Hadamard) and H_m a Paley matrix (QuaRot's sizes such as
/// 576 = 36 x 16 and 1536 = 12 x 128). Optionally with seeded random signs in front
/// (x -> (x * s) H): a randomised Hadamard matrix, still orthogonal.
public struct HadamardTransform: Sendable {
    public let size: Int
    /// m, the order of the Paley factor (1: a power of two alone).
    public let paleyOrder: Int
    let paley: [Float]
    /// Random signs s (size entries of +-1), or nil for the plain transform.
    let signs: [Float]?

    /// Refuses sizes that are not m 2^k for a Paley order m (q + 1, q a prime = 3 mod 4; or
    /// 2 (q + 1), q a prime = 1 mod 4), naming the size.
    public init(size n: Int, seed: UInt64? = nil) throws {
        guard n >= 1 else { throw TQError.invalid("Hadamard size \(n) must be positive") }
        guard let m = Self.paleyOrder(for: n) else {
            throw TQError.unsupported("no Hadamard matrix of size \(n) here: sizes are m x 2^k with m 1 or a Paley order "
                                      + "(12, 20, 24, 28, 36, 44, 48, 60, ...)")
        }
        size = n
        paleyOrder = m
        paley = m == 1 ? [] : Self.paleyMatrix(m)!
        if let seed {
            var rng = SeededGenerator(seed: seed)
            signs = (0..<n).map { _ in Bool.random(using: &rng) ? 1 : -1 }
        } else {
            signs = nil
        }
    }

    /// x [rows x size] <- x Q in place, Q = diag(s) H (H alone without signs).
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int) {
        if let signs { scaleColumns(x, rows: rows, by: signs) }
        paley.withUnsafeBufferPointer { tqk_hadamard_rows(x, Int64(rows), Int64(size), $0.baseAddress, Int64(paleyOrder), 0) }
    }

    /// x [rows x size] <- x Q^T in place: the inverse of `apply`.
    public func applyTransposed(_ x: UnsafeMutablePointer<Float>, rows: Int) {
        paley.withUnsafeBufferPointer { tqk_hadamard_rows(x, Int64(rows), Int64(size), $0.baseAddress, Int64(paleyOrder), 1) }
        if let signs { scaleColumns(x, rows: rows, by: signs) }
    }


    /// The smallest m with size = m 2^k and a Paley matrix of order m (1 for a power of two).
    static func paleyOrder(for n: Int) -> Int? {
        var m = n
        while m % 2 == 0 { m /= 2 }
        if m == 1 { return 1 }
        while m <= n {
            if paleyMatrix(m) != nil { return m }
            m *= 2
        }
        return nil
    }

    /// A +-1 Hadamard matrix of order m (row-major) by Paley's constructions over the field of q
    /// elements, q a prime or the square of one: I (m = q + 1, q = 3 mod 4) or II (m = 2 (q + 1),
    /// q = 1 mod 4; 52 from q = 25); nil for other m.
    static func paleyMatrix(_ m: Int) -> [Float]? {
        guard m >= 4, m % 4 == 0 else { return nil }
        if Field(order: m - 1) != nil, (m - 1) % 4 == 3 { return paleyI(q: m - 1) }
        if Field(order: m / 2 - 1) != nil, (m / 2 - 1) % 4 == 1 { return paleyII(q: m / 2 - 1) }
        return nil
    }

    /// GF(p) or GF(p^2) = {a + b t : t^2 = r}, r a non-residue mod p; element a + b t has index a + p b.
    struct Field {
        let p: Int, q: Int
        /// Whether each element is a non-zero square (its quadratic character is 1).
        let square: [Bool]

        init?(order q: Int) {
            func prime(_ n: Int) -> Bool { n >= 2 && !(2..<max(2, Int(Double(n).squareRoot()) + 1)).contains { $0 < n && n % $0 == 0 } }
            let root = Int(Double(q).squareRoot().rounded())
            let p = prime(q) ? q : (root * root == q && prime(root) && root > 2 ? root : 0)
            guard p > 0 else { return nil }
            self.p = p
            self.q = q
            let r = (2..<max(3, p)).first { x in !(1..<p).contains { ($0 * $0) % p == x } } ?? 2   // a non-residue mod p
            var square = [Bool](repeating: false, count: q)
            for e in 1..<q {
                let a = e % p, b = e / p
                let s = q == p ? (a * a) % p : (a * a + b * b * r) % p + p * ((2 * a * b) % p)
                square[s] = true
            }
            self.square = square
        }

        /// The index of x_j - x_i.
        func difference(_ j: Int, _ i: Int) -> Int {
            let a = ((j % p - i % p) % p + p) % p, b = ((j / p - i / p) % p + p) % p
            return a + p * b
        }

        func chi(_ e: Int) -> Float { e == 0 ? 0 : (square[e] ? 1 : -1) }
    }

    /// The conference-style core: C[0][j] = 1, C[i][0] = firstColumn, C[i][j] = chi(x_j - x_i) (the
    /// Jacobsthal matrix, chi the quadratic character of the field) for i, j >= 1.
    private static func core(q: Int, firstColumn: Float) -> [[Float]] {
        let field = Field(order: q)!
        return (0...q).map { i in
            (0...q).map { j in
                if i == 0 { return j == 0 ? 0 : 1 }
                if j == 0 { return firstColumn }
                return field.chi(field.difference(j - 1, i - 1))
            }
        }
    }

    /// H = I + S, S = [[0, 1^T], [-1, Q]] (skew for q = 3 mod 4).
    private static func paleyI(q: Int) -> [Float] {
        let s = core(q: q, firstColumn: -1), n = q + 1
        return (0..<n).flatMap { i in (0..<n).map { j in s[i][j] + (i == j ? 1 : 0) } }
    }

    /// Each 0 of C = [[0, 1^T], [1, Q]] (symmetric for q = 1 mod 4) becomes [[1, -1], [-1, -1]],
    /// each +-1 becomes +-[[1, 1], [1, -1]].
    private static func paleyII(q: Int) -> [Float] {
        let c = core(q: q, firstColumn: 1), n = 2 * (q + 1)
        var h = [Float](repeating: 0, count: n * n)
        for i in 0...q {
            for j in 0...q {
                let block: [[Float]] = c[i][j] == 0 ? [[1, -1], [-1, -1]] : [[c[i][j], c[i][j]], [c[i][j], -c[i][j]]]
                for a in 0..<2 { for b in 0..<2 { h[(2 * i + a) * n + 2 * j + b] = block[a][b] } }
            }
        }
        return h
    }
}

/// Every row of x [rows x s.count] multiplied elementwise by s.
func scaleColumns(_ x: UnsafeMutablePointer<Float>, rows: Int, by s: [Float]) {
    let n = s.count
    for r in 0..<rows { for i in 0..<n { x[r * n + i] *= s[i] } }
}
