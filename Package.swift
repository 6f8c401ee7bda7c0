// swift-tools-version: 6.1
import PackageDescription

// libomp's header ships with LLVM 14 (Debian libomp-dev); clang 21 of the Swift toolchain
// has none, so add it after clang's own headers (see docs: BUILD-NOTES).
let ompInclude = "/usr/lib/llvm-14/lib/clang/14.0.6/include"

// The major version of the C ABI: the SONAME is libtesseraq.so.<abiMajor>. It must equal the first
// number of Runtime.version (a test checks it).
let abiMajor = 0

let package = Package(
    name: "tesseraq",
    products: [
        .library(name: "tesseraq", type: .dynamic, targets: ["TesseraQC"]),
        .executable(name: "tesseraq-cli", targets: ["tesseraq-cli"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(
            name: "TQKernels",
            cSettings: [
                .unsafeFlags([
                    "-O3", "-fopenmp", "-fvisibility=hidden", "-mavx2", "-mfma", "-mf16c",
                    "-idirafter", ompInclude,
                ]),
            ],
            linkerSettings: [.linkedLibrary("omp5")]
        ),
        .target(name: "TesseraQ", dependencies: ["TQKernels"]),
        .target(
            name: "TesseraQC",
            dependencies: ["TesseraQ"],
            exclude: ["exports.map"],
            // Only tq_* is exported, and the SONAME carries the major version (Runtime.version).
            linkerSettings: [.unsafeFlags([
                "-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/TesseraQC/exports.map",
                "-Xlinker", "-soname=libtesseraq.so.\(abiMajor)", "-use-ld=lld",
            ])]
        ),
        .executableTarget(
            name: "tesseraq-cli",
            dependencies: ["TesseraQ", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "tesseraq-bench", dependencies: ["TesseraQ", "TQKernels"], path: "bench/swift"),
        .testTarget(name: "TesseraQTests", dependencies: ["TesseraQ", "TesseraQC", "TQKernels"]),
    ]
)
