import Tensors

/// The three conditionings a TokenFlow UNet call stacks in its batch, in this order: the source branch
/// (inverted latents with the inversion prompt, whose features are injected and propagated), then the two
/// classifier-free guidance branches on the edited latents (negative prompt, prompt). Every place that
/// builds or splits such a batch goes through `BranchStack`, so the order is written once.
enum Branch: Int, CaseIterable {
    case source, uncond, cond
}

/// A batch of `framesPerBranch` frames per branch, stacked in `Branch` order along the first axis.
struct BranchStack {
    let framesPerBranch: Int

    func range(_ branch: Branch) -> Range<Int> {
        (branch.rawValue * framesPerBranch)..<((branch.rawValue + 1) * framesPerBranch)
    }

    /// The rows of `branch` in a stacked tensor [3n, ...] (a view).
    func slice(_ x: Tensor, _ branch: Branch) -> Tensor { x.slice(range(branch)) }

    /// Stacks one tensor per branch.
    func stack(_ part: (Branch) throws -> Tensor) throws -> Tensor { try concat(Branch.allCases.map(part), axis: 0) }

    /// For each row of the stack, the row it takes under PnP injection: the source branch's own rows, and the
    /// guidance branches' frames the source's same frames.
    var sourceDonors: [Int] { (0..<(Branch.allCases.count * framesPerBranch)).map { $0 % framesPerBranch } }

    /// A copy of the stacked `x` with the source branch's rows copied over both guidance branches
    /// (PnP injection).
    func sourceCopiedToGuidance(_ x: Tensor) throws -> Tensor {
        let result = try x.copy()
        let source = slice(x, .source)
        for branch in [Branch.uncond, .cond] {
            slice(result, branch).mutablePointer.update(from: source.pointer, count: source.count)
        }
        return result
    }
}
