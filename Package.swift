// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "TokenFlow",
    products: [
        .library(name: "Tensors", targets: ["Tensors"]),
        .library(name: "Diffusion", targets: ["Diffusion"]),
        .library(name: "TokenFlow", targets: ["TokenFlow"]),
        .executable(name: "tokenflow-bench", targets: ["tokenflow-bench"]),
    ],
    targets: [
        // OpenBLAS from Debian's libopenblas-dev, found through pkg-config.
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(name: "Tensors", dependencies: ["CBLAS"]),
        .target(name: "Diffusion", dependencies: ["Tensors"]),
        .target(name: "TokenFlow", dependencies: ["Diffusion", "Tensors"]),
        .executableTarget(name: "tokenflow-bench", dependencies: ["Tensors", "Diffusion"]),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors"]),
        .testTarget(name: "DiffusionTests", dependencies: ["Diffusion", "Tensors"]),
        .testTarget(name: "TokenFlowTests", dependencies: ["TokenFlow", "Diffusion", "Tensors"]),
    ]
)
