"""ShardState on a torch device (CUDA; "cpu" for tests): same arithmetic, same certification."""

from __future__ import annotations

import numpy as np

from selectray.kcenter.shard import DEFAULT_BLOCK_ROWS, ShardState
from selectray.kcenter.vectors import VectorRows

GPU_BLOCK_ROWS = 16384  # rows per block on CUDA (a 16384 x 1024 block is 64 MiB)


class TorchShardState(ShardState):
    """ShardState with vectors and state on a torch device (CUDA, or "cpu" for testing).

    Same arithmetic, same certification: only the float32 rounding differs, which
    the error bound covers. TF32 is switched off around the products, since its
    10-bit mantissa would break that bound.
    """

    def __init__(self, rows: VectorRows, *, block_rows: int = DEFAULT_BLOCK_ROWS, device: str = "cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.xt = torch.from_numpy(np.ascontiguousarray(rows.x)).to(self.device)
        self.nt = torch.from_numpy(rows.norms).to(self.device)
        if self.device.type == "cuda":
            block_rows = max(block_rows, GPU_BLOCK_ROWS)  # fewer, larger kernels
        super().__init__(rows, block_rows=block_rows)

    def reset(self) -> None:
        super().reset()
        torch = self.torch
        n = len(self.pos)
        self.ft = torch.full((n,), float("inf"), dtype=torch.float32, device=self.device)
        self.at = torch.full((n,), -1, dtype=torch.int64, device=self.device)

    def _gather(self, local: np.ndarray) -> np.ndarray:
        idx = self.torch.from_numpy(np.asarray(local, np.int64)).to(self.device)
        return self.xt[idx].float().cpu().numpy()

    def _mark_centers(self, local: np.ndarray, idx: np.ndarray) -> int:
        torch = self.torch
        lt = torch.from_numpy(np.asarray(local, np.int64)).to(self.device)
        new = int((self.ft[lt] >= 0).sum())
        self.ft[lt] = -1.0
        self.at[lt] = torch.from_numpy(np.asarray(idx, np.int64)).to(self.device)
        return new

    def _apply_chunk(self, c: np.ndarray, cn: np.ndarray, first: int, track: bool) -> np.ndarray | None:
        torch = self.torch
        cm2t = torch.from_numpy(np.ascontiguousarray(c.T * np.float32(-2.0))).to(self.device)
        cnt = torch.from_numpy(cn).to(self.device)
        col_max = torch.full((len(c),), float("-inf"), device=self.device) if track else None
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            for s in range(0, len(self.pos), self.block_rows):
                e = min(len(self.pos), s + self.block_rows)
                g = torch.addmm(cnt, self.xt[s:e].float(), cm2t)
                v, j = g.min(dim=1)
                v = (v + self.nt[s:e]).clamp_min_(0.0)
                fb = self.ft[s:e]
                if track:
                    g = (g + self.nt[s:e, None]).clamp_min_(0.0)
                    g[:, 0] = torch.minimum(g[:, 0], fb)
                    g = torch.cummin(g, dim=1).values
                    col_max = torch.maximum(col_max, g.max(dim=0).values)
                better = v < fb
                self.ft[s:e] = torch.where(better, v, fb)
                self.at[s:e] = torch.where(better, first + j, self.at[s:e])
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        return None if col_max is None else col_max.cpu().numpy()

    def top(self, m: int):
        n = len(self.pos)
        q = min(m + 1, n - self._n_center_rows)
        if q <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32), np.empty((0, self.x.shape[1]), np.float32)
        vals, idx = self.torch.topk(self.ft, q, sorted=False)
        idx_np = idx.cpu().numpy()
        return self.pos[idx_np], vals.cpu().numpy(), self.xt[idx].float().cpu().numpy()

    def finalize(self, vecs, positions):
        if len(vecs):
            self.apply(vecs, positions)
        torch = self.torch
        centers = torch.from_numpy(np.concatenate(self._centers)).to(self.device)
        dist = torch.empty(len(self.pos), dtype=torch.float32, device=self.device)
        for s in range(0, len(self.pos), self.block_rows):
            e = min(len(self.pos), s + self.block_rows)
            diff = self.xt[s:e].float() - centers[self.at[s:e]]
            dist[s:e] = (diff * diff).sum(dim=1).sqrt()
        self.assign = self.at.cpu().numpy()
        return self.pos, self.assign.copy(), dist.cpu().numpy()

