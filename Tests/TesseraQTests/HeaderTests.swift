import Foundation
import Testing

/// include/tesseraq.h is the header SwiftPM generates for the C-ABI module; it must be current.
@Test func committedHeaderMatchesGenerated() throws {
    let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    // The test binary lives in <scratch>/<triple>/<config>/ (possibly inside an .xctest bundle).
    while !FileManager.default.fileExists(atPath: dir.path + "/TesseraQC.build") && dir.path != "/" {
        dir.deleteLastPathComponent()
    }
    let generated = dir.path + "/TesseraQC.build/include/TesseraQC-Swift.h"
    let committed = Fixtures.repoRoot + "/include/tesseraq.h"
    let g = try #require(FileManager.default.contents(atPath: generated), "no generated header at \(generated)")
    let c = try #require(FileManager.default.contents(atPath: committed), "no committed header at \(committed)")
    #expect(g == c, "include/tesseraq.h is stale: copy \(generated) over it")
}
