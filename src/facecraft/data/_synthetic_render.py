"""Painting the procedural faces of :mod:`facecraft.data.synthetic` from their parameters.

Pure torch, batched over images: soft-edged ellipses and strokes painted back
to front on a pixel grid in the face's own frame (shifted, scaled and rolled
by the pose), then shaded by a brightness and a directional light.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

__all__ = ["render_faces"]

Params = Dict[str, torch.Tensor]


def render_faces(p: Params, size: int) -> torch.Tensor:
    """Paint a batch of faces; returns float ``(n, 3, S, S)`` roughly in [0, 1].

    Args:
        p: per-image parameters (identity look and image pose, expression,
            lighting), each a tensor with one row per image.
        size: ``S``.
    """
    c = _Canvas(p, size)
    _paint_head(c, p)
    _paint_eyes_and_nose(c, p)
    _paint_mouth(c, p)
    _paint_glasses(c, p, size)
    # lighting: overall brightness and a directional gradient in image coordinates
    grad = _col(torch.cos(p["light_dir"])) * c.x + _col(torch.sin(p["light_dir"])) * c.y
    shade = _col(p["bright"]) * (1 + _col(p["light_amt"]) * grad)
    return c.img * shade[:, None]


def _col(v: torch.Tensor) -> torch.Tensor:
    """A per-image value ``(n,)`` broadcast over pixels: ``(n, 1, 1)``."""
    return v[:, None, None]


class _Canvas:
    """A batch of images being painted, with pixel coordinates in image and face frames.

    ``x, y`` are image coordinates in ``[-1, 1]``; ``u, v`` the same pixels in
    the face's frame (pose shift ``dx, dy``, roll ``rot``, ``scale`` undone).
    The canvas starts as the background colour, darkening towards the bottom.
    """

    def __init__(self, p: Params, size: int) -> None:
        n = p["dx"].shape[0]
        coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        y, x = torch.meshgrid(coords, coords, indexing="ij")
        x, y = x.expand(n, size, size), y.expand(n, size, size)
        cos, sin = torch.cos(p["rot"]), torch.sin(p["rot"])
        xs, ys = x - _col(p["dx"]), y - _col(p["dy"])
        self.n = n
        self.x, self.y = x, y
        self.u = (_col(cos) * xs + _col(sin) * ys) / _col(p["scale"])
        self.v = (-_col(sin) * xs + _col(cos) * ys) / _col(p["scale"])
        self.soft = 1.4 / size
        self.img = (p["bg"][:, :, None, None] * (1 - 0.25 * (y + 1)[:, None] / 2)).contiguous()

    def step(self, d: torch.Tensor) -> torch.Tensor:
        """A soft step: about 0 for ``d < 0``, 1 for ``d > 0``, over about a pixel."""
        return torch.sigmoid(d / self.soft)

    def ellipse(
        self,
        cx: torch.Tensor,
        cy: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        uu: Optional[torch.Tensor] = None,
        vv: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Soft mask of the ellipse centred at ``(cx, cy)`` with semi-axes ``a, b`` (face frame,
        or the coordinates ``uu, vv`` given instead)."""
        uu = self.u if uu is None else uu
        vv = self.v if vv is None else vv
        a, b = _col(a), _col(b)
        q = torch.sqrt(((uu - _col(cx)) / a) ** 2 + ((vv - _col(cy)) / b) ** 2 + 1e-12)
        return self.step((1 - q) * torch.minimum(a, b))

    def paint(self, colour: torch.Tensor, mask: torch.Tensor) -> None:
        """Blend ``colour`` ``(n, 3)`` over the canvas with weight ``mask`` ``(n, S, S)``."""
        self.img.lerp_(colour[:, :, None, None].expand_as(self.img), mask[:, None])


def _paint_head(c: _Canvas, p: Params) -> None:
    """Back hair, neck, face and fringe."""
    u, v, n = c.u, c.v, c.n
    zero = torch.zeros(n)
    face_cy = torch.full((n,), 0.05)
    a, b = p["face_a"], p["face_b"]
    hair_cy = face_cy - p["hair_top"] / 2
    back = c.ellipse(zero, hair_cy, a + 0.09, b + p["hair_top"] / 2) * c.step(
        _col(face_cy + p["hair_len"]) - v
    )
    c.paint(p["hair"], back)
    c.paint(p["skin"] * 0.9, c.ellipse(zero, face_cy + b * 0.95, a * 0.35, b * 0.35))  # neck
    c.paint(p["skin"], c.ellipse(zero, face_cy, a, b))
    fringe_v = _col(face_cy - b * p["fringe"]) + 0.03 * torch.sin(u * 9 + _col(p["hair_top"] * 40))
    c.paint(p["hair"], c.ellipse(zero, face_cy, a * 1.01, b * 1.01) * c.step(fringe_v - v))


def _paint_eyes_and_nose(c: _Canvas, p: Params) -> None:
    """Eye whites, irises and brows on both sides, then the nose."""
    u, v, n = c.u, c.v, c.n
    for s in (-1.0, 1.0):
        ex = s * p["eye_dx"]
        c.paint(torch.ones(n, 3) * 0.95, c.ellipse(ex, p["eye_y"], p["eye_r"] * 1.35, p["eye_r"]))
        c.paint(p["eye_col"], c.ellipse(ex, p["eye_y"], p["eye_r"] * 0.62, p["eye_r"] * 0.8))
        tilt_v = v + s * _col(p["brow_tilt"]) * (u - _col(ex))
        c.paint(
            p["hair"] * 0.8,
            c.ellipse(ex, p["eye_y"] - p["brow_gap"], p["eye_r"] * 1.8, p["brow_th"], vv=tilt_v),
        )
    c.paint(
        p["skin"] * 0.78,
        c.ellipse(
            torch.zeros(n),
            p["eye_y"] + 0.06 + p["nose_len"] / 2,
            torch.full((n,), 0.03),
            p["nose_len"] / 2,
        ),
    )


def _paint_mouth(c: _Canvas, p: Params) -> None:
    """Lips (closed) or the open mouth, curved up when smiling, with teeth in an open smile."""
    u, v, n = c.u, c.v, c.n
    smile = p["smiling"]
    width = p["mouth_w"] * (1 + 0.25 * smile)
    k = smile * 0.11 / width**2
    centre = _col(p["mouth_y"]) - _col(k) * u**2
    half = _col(0.022 + 0.05 * p["mouth_open"])
    mouth = c.step(half - (v - centre).abs()) * c.step(_col(width) - u.abs())
    lips = torch.tensor([0.72, 0.28, 0.32]).expand(n, 3)
    inside = torch.tensor([0.22, 0.04, 0.07]).expand(n, 3)
    c.paint(torch.where(p["mouth_open"][:, None] > 0, inside, lips), mouth)
    teeth = c.step(_col(0.02 * p["mouth_open"]) - (v - centre + _col(0.02 * p["mouth_open"])).abs())
    c.paint(torch.full((n, 3), 0.95), mouth * teeth * _col(smile))


def _paint_glasses(c: _Canvas, p: Params, size: int) -> None:
    """Glasses, where worn: two rings around the eyes and a bridge."""
    u, v, n = c.u, c.v, c.n
    t = 0.02 + 1.0 / size
    ring_r = _col(p["eye_r"] * 2.0)
    glasses = torch.zeros_like(u)
    for s in (-1.0, 1.0):
        r = torch.sqrt((u - _col(s * p["eye_dx"])) ** 2 + (v - _col(p["eye_y"])) ** 2)
        glasses = torch.maximum(glasses, c.step(t - (r - ring_r).abs()))
    bridge = c.step(t - (v - _col(p["eye_y"])).abs()) * c.step(_col(p["eye_dx"]) - ring_r - u.abs())
    glasses = torch.maximum(glasses, bridge) * _col(p["glasses"])
    c.paint(torch.tensor([0.08, 0.08, 0.10]).expand(n, 3), glasses)
