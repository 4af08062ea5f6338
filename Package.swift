// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "TokenFlow",
    products: [
        .library(name: "Tensors", targets: ["Tensors"]),
        .library(name: "Diffusion", targets: ["Diffusion"]),
        .library(name: "VideoEditing", targets: ["VideoEditing"]),
        // libtokenflow.so: the C API of Include/tokenflow.h, loadable by C hosts with no Swift installed.
        .library(name: "tokenflow", type: .dynamic, targets: ["CTokenFlow"]),
        // The `tokenflow` command. Its product is named tokenflow-cli because the shared library
        // (libtokenflow.so) owns the product name "tokenflow"; the install step installs it as bin/tokenflow.
        .executable(name: "tokenflow-cli", targets: ["tokenflow-cli"]),
        .executable(name: "tokenflow-bench", targets: ["tokenflow-bench"]),
        .executable(name: "tokenflow-fuzz", targets: ["tokenflow-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // OpenBLAS from Debian's libopenblas-dev, found through pkg-config.
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // oneDNN from Debian's libdnnl-dev: the float32 GEMM (faster than OpenBLAS's on the engine's products).
        .systemLibrary(
            name: "CDNNL",
            providers: [.apt(["libdnnl-dev"])]
        ),
        // The engine's own hot kernels in C, for any x86-64, one variant per instruction set (portable,
        // AVX2/FMA, AVX-512) chosen at run time; and the CPU feature detection that makes the choices.
        .target(name: "CKernels"),
        // Compiled for the x86-64 baseline like every Swift module, so any x86-64 CPU runs the engine: its hot
        // loops are CKernels' (Swift's SIMD16 code at the baseline measured 2x slower than for AVX2).
        .target(name: "Tensors", dependencies: ["CBLAS", "CDNNL", "CKernels"]),
        .target(name: "Diffusion", dependencies: ["Tensors"]),
        // The editing methods (TokenFlow-PnP, SDEdit, reconstruction) over one clip pipeline, and the settings table.
        .target(name: "VideoEditing", dependencies: ["Diffusion", "Tensors"]),
        // Include/tokenflow.h as a Clang module (+ a dladdr helper), so Swift uses the header's own types.
        .target(name: "CTokenFlowABI"),
        .target(
            name: "CTokenFlow",
            dependencies: ["CTokenFlowABI", "VideoEditing", "Diffusion", "Tensors"],
            exclude: ["tokenflow.map"],
            linkerSettings: [.unsafeFlags([
                // Dynamic products ignore --static-swift-stdlib: ask the driver directly, so the .so
                // needs no Swift runtime on the host's library path.
                "-static-stdlib",
                // The driver's static link line misses FoundationEssentials' own dependencies; name them,
                // and refuse undefined symbols so a missing one fails here rather than in the host.
                "-lswiftSynchronization", "-l_FoundationCollections", "-l_FoundationCShims",
                "-Xlinker", "-z", "-Xlinker", "defs",
                // lld resolves references to the hidden Swift symbols locally; gold left them in .dynsym.
                "-use-ld=lld",
                // Export only the tf_* functions of the header.
                "-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/CTokenFlow/tokenflow.map",
                "-Xlinker", "-soname=libtokenflow.so.0",
                // Never unmapped by dlclose: the static Swift runtime and worker threads outlive a context.
                "-Xlinker", "-z", "-Xlinker", "nodelete",
            ])]
        ),
        // Whole-clip video decode/encode for the CLI, in C against Debian's libavformat/libavcodec/libswscale.
        .target(
            name: "CVideoIO",
            linkerSettings: [.linkedLibrary("avformat"), .linkedLibrary("avcodec"), .linkedLibrary("swscale"), .linkedLibrary("avutil")]
        ),
        .executableTarget(
            name: "tokenflow-cli",
            dependencies: ["VideoEditing", "Diffusion", "Tensors", "CVideoIO",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "tokenflow-bench", dependencies: ["Tensors", "Diffusion", "VideoEditing"]),
        // The fuzzing driver (Tests/Fuzz/README.md): deterministic as built here (Tests/Host/fuzz.sh); under
        // libFuzzer when built with -sanitize=fuzzer -DLIBFUZZER (scripts/fuzz_campaign.sh). CLibFuzzer only
        // declares libFuzzer's entry points, which the toolchain's fuzzer runtime defines in that build.
        .systemLibrary(name: "CLibFuzzer"),
        .executableTarget(name: "tokenflow-fuzz", dependencies: ["Tensors", "Diffusion", "VideoEditing", "CLibFuzzer"]),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors"]),
        .testTarget(name: "DiffusionTests", dependencies: ["Diffusion", "Tensors"]),
        .testTarget(name: "VideoEditingTests", dependencies: ["VideoEditing", "Diffusion", "Tensors"]),
    ]
)
