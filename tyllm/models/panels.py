"""Linear weights in panels: [N, K] stored as [N / P, K, P], so that P consecutive outputs are
contiguous at each k. A backend whose matmul kernel multiplies one input by a vector of outputs
at a time (the packed-GEMM micro-kernel) asks for them (`Target.weight_panels`); the step
graph reads them through `dense`, a view the backend folds into the matmul, so the ONNX twin
and the eager module compute the same linear from the same stored bytes."""

import torch


def panel_width(out_features: int, panels: int | None) -> int | None:
    """The panel width a weight of `out_features` rows gets: `panels` when it divides them."""
    return panels if panels and out_features % panels == 0 else None


def panelled(shape: tuple[int, int], panels: int | None) -> tuple[int, ...]:
    n, k = shape
    return (n // panels, k, panels) if panels else (n, k)


def dense_shape(param: torch.Tensor, panels: int | None) -> torch.Size:
    """The [N, K] shape of a parameter stored in panels of `panels` outputs (or its own)."""
    if not panels:
        return param.shape
    blocks, k, p = param.shape
    return torch.Size((blocks * p, k))


def to_panels(weight: torch.Tensor, panels: int | None) -> torch.Tensor:
    """[N, K] -> [N / P, K, P] (a copy); the weight itself without panels."""
    if not panels:
        return weight
    n, k = weight.shape
    return weight.reshape(n // panels, panels, k).permute(0, 2, 1).contiguous()


def dense(weight: torch.Tensor, panels: int | None) -> torch.Tensor:
    """The [N, K] view of a weight stored in panels (what the graph multiplies by)."""
    if not panels:
        return weight
    blocks, k, p = weight.shape
    return weight.permute(0, 2, 1).reshape(blocks * p, k)


def panel_rows(weight: torch.Tensor, rows: torch.Tensor, panels: int | None) -> torch.Tensor:
    """weight's dense rows `rows` [T] -> [T, K], gathered from the panels they lie in (an
    embedding lookup in a tied LM head), without making the dense view of the whole weight."""
    if not panels:
        return torch.nn.functional.embedding(rows, weight)
    rows = rows.to(torch.int32)  # int32 // int: TVM's importer makes the divisor int32
    blocks = torch.index_select(weight, 0, rows // panels)  # [T, K, P]
    lane = (rows % panels).to(torch.int64).view(-1, 1, 1).expand(-1, weight.shape[1], 1)
    return torch.gather(blocks, 2, lane).squeeze(2)
