r"""Protein backbone frames: backbone atoms <-> SE(3) frames, centring, units, PDB output.

A residue's **frame** is a rigid motion ``(R, t)`` stored as a 4x4 homogeneous matrix
``[[R, t], [0, 0, 0, 1]]``; a protein of ``N`` residues is a tensor ``(..., N, 4, 4)`` (a point
of ``SE(3)^N``). The columns of ``R`` are the frame's axes in global coordinates (column-vector
convention): an atom with local coordinates ``x_local`` sits at ``R @ x_local + t``.

**Frame convention (AlphaFold).** The frame of a residue is built from its N, CA and C atoms by
Gram-Schmidt, as in AlphaFold 2 (supplementary Algorithm 21, ``rigidFrom3Points`` with
``x1 = N, x2 = CA, x3 = C``), which is also the backbone frame of OpenFold's and FrameFlow's data
pipelines (``atom37_to_frames``):

* origin ``t = CA``;
* ``e1 = (C - CA) / |C - CA|``: C lies on the positive x axis;
* ``e2``: ``N - CA`` with its ``e1`` component removed, normalised: N lies in the xy plane with
  positive y;
* ``e3 = e1 x e2``, so ``R = (e1, e2, e3)`` is a proper rotation.

This is the convention of AlphaFold's residue constants, whose backbone group places N at
``(-0.525, 1.363, 0)`` and C at ``(1.526, 0, 0)``. OpenFold's ``Rigid.from_3_points(p_neg_x_axis,
origin, p_xy_plane)`` called directly as ``(N, CA, C)`` gives a *different* frame (x axis along
``CA - N``); AlphaFold's pipeline calls it as ``(C, CA, N)`` and then flips the x and z axes, which
gives the frame above.

**Ideal geometry.** :func:`to_backbone` places atoms from frames with ideal bond lengths and
angles (Engh & Huber's tables; the values are the module constants below, in Angstrom and
degrees): ``N-CA = 1.458``, ``CA-C = 1.525``, ``N-CA-C = 111.0``, peptide bond ``C-N = 1.329``,
``CA-C-N = 116.2``, ``C=O = 1.231``. In the frame, ``C = (1.525, 0, 0)`` and
``N = 1.458 (cos 111, sin 111, 0) = (-0.5225, 1.3612, 0)`` (AlphaFold's literature positions differ
by less than 0.005 Angstrom). Because these local positions obey the frame convention,
``from_backbone(*to_backbone(f)...)`` returns ``f`` up to rounding.

**Units.** The ideal geometry is in Angstrom; frames predicted in nanometres are converted with
:func:`scale_translations` and :data:`ANGSTROM_PER_NM` first.

**Masks.** Every function takes ``mask``, a ``(..., N)`` boolean tensor (integer and floating
masks count non-zero as present) marking the residues that exist (padding, missing residues).
Masked residues are ignored in every computation and may hold anything, NaN included; their
outputs are well defined: identity frames, zero coordinates, and no records in PDB files.

References:
    J. Jumper et al., "Highly accurate protein structure prediction with AlphaFold", Nature 596,
    2021 (supplementary information, Algorithm 21).
    R. A. Engh and R. Huber, "Accurate bond and angle parameters for X-ray protein structure
    refinement", Acta Crystallographica A47, 1991.
    J. Yim et al., "Fast protein backbone generation with SE(3) flow matching", 2023 (FrameFlow).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from typing import IO

import torch
from torch import Tensor

from ._utils import eps_for, manifold_checks_enabled, value_checks_enabled

__all__ = [
    "ANGLE_CA_C_N",
    "ANGLE_N_CA_C",
    "ANGSTROM_PER_NM",
    "BACKBONE_ATOMS",
    "BOND_CA_C",
    "BOND_C_N",
    "BOND_C_O",
    "BOND_N_CA",
    "DEFAULT_TERMINAL_PSI",
    "LOCAL_C",
    "LOCAL_N",
    "centre",
    "from_backbone",
    "scale_translations",
    "to_backbone",
    "write_pdb",
]

ANGSTROM_PER_NM = 10.0
"""Angstrom per nanometre: ``scale_translations(frames, 1 / ANGSTROM_PER_NM)`` converts
Angstrom to nanometres.
"""

BACKBONE_ATOMS = ("N", "CA", "C", "O")
"""Order of the atoms along the atom axis of :func:`to_backbone`'s output."""

BOND_N_CA = 1.458
"""Ideal N-CA bond length (Angstrom)."""
BOND_CA_C = 1.525
"""Ideal CA-C bond length (Angstrom)."""
BOND_C_N = 1.329
"""Ideal peptide bond length C(i)-N(i+1) (Angstrom)."""
BOND_C_O = 1.231
"""Ideal carbonyl bond length C=O (Angstrom)."""
ANGLE_N_CA_C = 111.0
"""Ideal N-CA-C angle (degrees)."""
ANGLE_CA_C_N = 116.2
"""Ideal CA-C-N(next) angle (degrees)."""
DEFAULT_TERMINAL_PSI = 145.0
"""psi (degrees) used to place the carbonyl oxygen of a residue without a next residue."""

LOCAL_N = (
    BOND_N_CA * math.cos(math.radians(ANGLE_N_CA_C)),
    BOND_N_CA * math.sin(math.radians(ANGLE_N_CA_C)),
    0.0,
)
"""Local coordinates of N in the residue frame (CA at the origin)."""
LOCAL_C = (BOND_CA_C, 0.0, 0.0)
"""Local coordinates of C in the residue frame."""

_MAX_REPORTED = 10
_BISECTOR_MIN = 1e-3  # |u_CA + u_N| below this: CA-C-N(next) nearly straight, no bisector.


# ----------------------------------------------------------------------------- helpers


def _split(frames: Tensor) -> tuple[Tensor, Tensor]:
    """Rotations ``(..., 3, 3)`` and translations ``(..., 3)`` of homogeneous matrices."""
    return frames[..., :3, :3], frames[..., :3, 3]


def _join(r: Tensor, t: Tensor) -> Tensor:
    """Homogeneous matrices ``(..., 4, 4)`` from rotations and translations."""
    top = torch.cat([r, t[..., :, None]], dim=-1)
    bottom = torch.zeros((*top.shape[:-2], 1, 4), dtype=top.dtype, device=top.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    return x


def _check_frames(frames: object, name: str = "frames") -> Tensor:
    f = _check_tensor(frames, name)
    if f.ndim < 3 or f.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must have shape (..., N, 4, 4), got {_shape(f)}")
    if f.shape[-3] == 0:
        raise ValueError(f"{name} must hold at least one residue, got shape {_shape(f)}")
    return f


def _check_mask(mask: Tensor | None, shape: tuple[int, ...], device: torch.device) -> Tensor | None:
    """``(..., N)`` boolean mask (non-zero = present) of exactly ``shape``, or None."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if _shape(mask) != shape:
        raise ValueError(
            f"mask must have shape {shape} (one entry per residue), got {_shape(mask)}"
        )
    if mask.device != device:
        raise ValueError(f"mask is on {mask.device} but the coordinates are on {device}")
    return mask if mask.dtype == torch.bool else mask != 0


def _indices(bad: Tensor) -> str:
    """Up to ``_MAX_REPORTED`` index tuples of the True entries of ``bad`` (host sync)."""
    idx = torch.nonzero(bad).tolist()
    shown = [tuple(i) if len(i) > 1 else i[0] for i in idx[:_MAX_REPORTED]]
    more = f" and {len(idx) - _MAX_REPORTED} more" if len(idx) > _MAX_REPORTED else ""
    return f"{shown}{more}"


def _unit(v: Tensor) -> tuple[Tensor, Tensor]:
    """Unit vectors and norms (``(..., 1)``) with a safe denominator at zero."""
    sq = (v * v).sum(-1, keepdim=True)
    tiny = eps_for(v.dtype) ** 2
    n = torch.sqrt(torch.clamp(sq, min=tiny))
    return v / n, n * (sq > tiny)


def _ideal_local(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    n = torch.tensor(LOCAL_N, dtype=dtype, device=device)
    c = torch.tensor(LOCAL_C, dtype=dtype, device=device)
    return n, c


def _place(a: Tensor, b: Tensor, c: Tensor, bond: float, angle: float, torsion: float) -> Tensor:
    """NeRF: the atom d with ``|cd| = bond``, angle ``b-c-d`` and dihedral ``a-b-c-d`` (radians)."""
    bc, _ = _unit(c - b)
    nrm, _ = _unit(torch.linalg.cross(b - a, bc))
    m = torch.linalg.cross(nrm, bc)
    return c + bond * (
        -math.cos(angle) * bc
        + math.sin(angle) * math.cos(torsion) * m
        + math.sin(angle) * math.sin(torsion) * nrm
    )


def _bisector_oxygen(c: Tensor, ca: Tensor, n_next: Tensor) -> tuple[Tensor, Tensor]:
    """O opposite the bisector of the angle CA-C-N(next), and whether the bisector is defined."""
    u_ca, l_ca = _unit(ca - c)
    u_n, l_n = _unit(n_next - c)
    s, l_s = _unit(u_ca + u_n)
    ok = (l_ca[..., 0] > 0) & (l_n[..., 0] > 0) & (l_s[..., 0] > _BISECTOR_MIN)
    return c - BOND_C_O * s, ok


@functools.lru_cache(maxsize=64)
def _terminal_oxygen_local(psi_degrees: float) -> tuple[float, float, float]:
    """Local O position when N(next) is placed ideally at dihedral N-CA-C-N(next) = psi."""
    f64 = torch.float64
    n = torch.tensor(LOCAL_N, dtype=f64)
    ca = torch.zeros(3, dtype=f64)
    c = torch.tensor(LOCAL_C, dtype=f64)
    n_next = _place(n, ca, c, BOND_C_N, math.radians(ANGLE_CA_C_N), math.radians(psi_degrees))
    o, _ = _bisector_oxygen(c, ca, n_next)
    x, y, z = o.tolist()
    return (x, y, z)


def _identity_like(frames: Tensor) -> Tensor:
    return torch.eye(4, dtype=frames.dtype, device=frames.device).expand(frames.shape)


def _check_on_se3(frames: Tensor, mask: Tensor | None, name: str) -> None:
    """Present frames are finite (value checks, on by default) and, behind the manifold switch,
    homogeneous rigid motions."""
    if frames.numel() == 0:
        return
    if value_checks_enabled():
        bad = ~torch.isfinite(frames.detach()).all(-1).all(-1)
        if mask is not None:
            bad = bad & mask
        if bool(bad.any()):
            raise ValueError(f"{name} hold non-finite values at residue(s) {_indices(bad)}")
    if not manifold_checks_enabled():
        return
    r, _ = _split(frames.detach())
    eye3 = torch.eye(3, dtype=frames.dtype, device=frames.device)
    bottom = frames.new_tensor([0.0, 0.0, 0.0, 1.0])
    dev = torch.maximum(
        (r.mT @ r - eye3).abs().amax((-2, -1)), (frames.detach()[..., 3, :] - bottom).abs().amax(-1)
    )
    dev = torch.maximum(dev, (torch.linalg.det(r) - 1.0).abs())
    if mask is not None:
        dev = torch.where(mask, dev, torch.zeros_like(dev))
    tol = 1e-4 if frames.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-8
    worst = float(dev.amax())
    if not worst <= tol:
        raise ValueError(
            f"{name} are not rigid motions [[R, t], [0, 0, 0, 1]] (R orthonormal, det +1): "
            f"deviation {worst:.3g} > {tol:g} at residue(s) {_indices(~(dev <= tol))}"
        )


# ----------------------------------------------------------------------------- frames <-> atoms


def from_backbone(
    n: Tensor, ca: Tensor, c: Tensor, *, mask: Tensor | None = None, eps: float = 1e-3
) -> Tensor:
    r"""Residue frames from backbone N, CA and C coordinates (AlphaFold's Gram-Schmidt).

    ``t = CA``, ``e1 = (C - CA)/|C - CA|``, ``e2`` = the unit part of ``N - CA`` orthogonal to
    ``e1``, ``e3 = e1 x e2`` (see the module notes). Differentiable; masked residues do not
    enter the computation (their coordinates may be NaN) and come back as identity frames.

    Args:
        n: N coordinates, shape ``(..., N, 3)``.
        ca: CA coordinates, same shape.
        c: C coordinates, same shape.
        mask: optional ``(..., N)`` mask of present residues.
        eps: a present residue is degenerate when ``|C - CA|`` or the distance of N from the
            line CA-C is below ``eps`` (coordinate units; atoms coincident or collinear).

    Returns:
        Frames, shape ``(..., N, 4, 4)``.

    Raises:
        ValueError: mismatched or wrong shapes; with value checks on (the default, see
            ``manifoldfm.checks``), non-finite coordinates or degenerate atoms of present
            residues, naming their indices.

    Example:
        >>> import torch
        >>> from manifoldfm.frames import from_backbone
        >>> n = torch.tensor([[-0.5, 1.4, 0.0]], dtype=torch.float64)
        >>> ca = torch.zeros(1, 3, dtype=torch.float64)
        >>> c = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
        >>> from_backbone(n, ca, c)[0]
        tensor([[1., 0., 0., 0.],
                [0., 1., 0., 0.],
                [0., 0., 1., 0.],
                [0., 0., 0., 1.]], dtype=torch.float64)
    """
    n = _check_tensor(n, "n")
    ca = _check_tensor(ca, "ca")
    c = _check_tensor(c, "c")
    if not (_shape(n) == _shape(ca) == _shape(c)):
        raise ValueError(
            f"n, ca and c must have the same shape (..., N, 3), got n: {_shape(n)}, "
            f"ca: {_shape(ca)}, c: {_shape(c)}"
        )
    if n.ndim < 2 or n.shape[-1] != 3:
        raise ValueError(f"n, ca and c must have shape (..., N, 3), got {_shape(n)}")
    if n.shape[-2] == 0:
        raise ValueError(f"at least one residue is needed, got coordinates of shape {_shape(n)}")
    if not (ca.dtype == n.dtype == c.dtype) or not (ca.device == n.device == c.device):
        raise ValueError("n, ca and c must share dtype and device")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}")
    if not eps >= 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}")
    m = _check_mask(mask, _shape(n)[:-1], n.device)
    if m is not None:
        # Masked residues get the ideal local geometry: finite values and gradients.
        ln, lc = _ideal_local(n.dtype, n.device)
        mm = m[..., None]
        n = torch.where(mm, n, ln)
        ca = torch.where(mm, ca, torch.zeros_like(ca))
        c = torch.where(mm, c, lc)
    v1 = c - ca
    v2 = n - ca
    e1, l1 = _unit(v1)
    u2 = v2 - (e1 * v2).sum(-1, keepdim=True) * e1
    e2, l2 = _unit(u2)
    if value_checks_enabled() and n.numel() > 0:
        finite = torch.isfinite(torch.cat([n, ca, c], dim=-1)).all(-1)
        bad = (l1[..., 0] <= eps) | (l2[..., 0] <= eps)
        if bool((bad | ~finite).any()):  # one host-device sync for both checks
            if not bool(finite.all()):
                raise ValueError(
                    f"backbone coordinates of shape {_shape(n)} are not finite at residue(s) "
                    f"{_indices(~finite)} (mask missing residues instead)"
                )
            raise ValueError(
                "degenerate backbone (|C - CA| or the distance of N from the line CA-C is "
                f"<= eps={eps:g}: coincident or collinear atoms) at residue(s) {_indices(bad)}"
            )
    e3 = torch.linalg.cross(e1, e2)
    frames = _join(torch.stack([e1, e2, e3], dim=-1), ca)
    if m is not None:
        frames = torch.where(m[..., None, None], frames, _identity_like(frames))
    return frames


def to_backbone(
    frames: Tensor,
    *,
    mask: Tensor | None = None,
    chain_index: Tensor | None = None,
    terminal_psi: float = DEFAULT_TERMINAL_PSI,
) -> Tensor:
    r"""Ideal-geometry backbone atoms N, CA, C, O from residue frames (Angstrom).

    N, CA and C are ``R @ x_local + t`` with the ideal local positions :data:`LOCAL_N`,
    ``(0, 0, 0)`` and :data:`LOCAL_C`, so :func:`from_backbone` recovers the frames exactly
    (up to rounding).

    The carbonyl **O** of residue ``i`` lies in the plane of CA(i), C(i) and N(i+1), at
    ``BOND_C_O`` from C(i), opposite the bisector of the angle CA(i)-C(i)-N(i+1):
    ``O = C - 1.231 (u_CA + u_N) / |u_CA + u_N|`` with ``u_CA``, ``u_N`` the unit vectors from
    C(i) to CA(i) and to N(i+1), so the angles CA-C-O and O-C-N are equal (121.9 degrees with the
    ideal CA-C-N of 116.2). When residue ``i`` has no linked successor (last residue, the next
    residue masked, a different ``chain_index``, or CA-C-N(i+1) straight within 0.06 degree) the
    successor's N is placed from frame ``i`` alone with the ideal peptide geometry and the
    dihedral ``N-CA-C-N(next) = terminal_psi``, and the same construction applies; this is
    the O of an ideal chain continuing with that psi.

    Args:
        frames: frames ``(..., N, 4, 4)`` with translations in Angstrom.
        mask: optional ``(..., N)`` mask of present residues; masked residues get zero
            coordinates and break the chain.
        chain_index: optional ``(..., N)`` chain labels; consecutive residues with different
            labels are not linked.
        terminal_psi: psi in degrees for placing O without a linked successor.

    Returns:
        Atoms, shape ``(..., N, 4, 3)``, in the order :data:`BACKBONE_ATOMS` (N, CA, C, O).

    Example:
        >>> import torch
        >>> from manifoldfm.frames import from_backbone, to_backbone
        >>> frames = torch.eye(4, dtype=torch.float64).expand(2, 4, 4).clone()
        >>> frames[1, 0, 3] = 3.8
        >>> atoms = to_backbone(frames)
        >>> tuple(atoms.shape)
        (2, 4, 3)
        >>> round(float((atoms[0, 2] - atoms[0, 3]).norm()), 3)
        1.231
        >>> back = from_backbone(atoms[..., 0, :], atoms[..., 1, :], atoms[..., 2, :])
        >>> torch.allclose(back, frames)
        True
    """
    frames = _check_frames(frames)
    batch = _shape(frames)[:-2]
    m = _check_mask(mask, batch, frames.device)
    _check_on_se3(frames, m, "frames")
    if chain_index is not None:
        if not isinstance(chain_index, Tensor):
            raise TypeError(
                f"chain_index must be a torch.Tensor or None, got {type(chain_index).__name__}"
            )
        if _shape(chain_index) != batch:
            raise ValueError(
                f"chain_index must have shape {batch} (one label per residue), "
                f"got {_shape(chain_index)}"
            )
    if isinstance(terminal_psi, bool) or not isinstance(terminal_psi, (int, float)):
        raise TypeError(f"terminal_psi must be a number (degrees), got {terminal_psi!r}")
    if not math.isfinite(terminal_psi):
        raise ValueError(f"terminal_psi must be finite, got {terminal_psi}")
    if m is not None:
        frames = torch.where(m[..., None, None], frames, _identity_like(frames))
    r, t = _split(frames)
    ln, lc = _ideal_local(frames.dtype, frames.device)
    lo = frames.new_tensor(_terminal_oxygen_local(float(terminal_psi)))
    n_at = t + r @ ln
    c_at = t + r @ lc
    o_term = t + r @ lo

    # Linked successor: the next residue exists, is present and in the same chain.
    n_next = torch.cat([n_at[..., 1:, :], n_at[..., -1:, :]], dim=-2)
    linked = torch.ones(batch, dtype=torch.bool, device=frames.device)
    linked[..., -1] = False
    if m is not None:
        linked[..., :-1] &= m[..., :-1] & m[..., 1:]
    if chain_index is not None:
        ci = chain_index.to(frames.device)
        linked[..., :-1] &= ci[..., :-1] == ci[..., 1:]
    o_link, ok = _bisector_oxygen(c_at, t, n_next)
    o_at = torch.where((linked & ok)[..., None], o_link, o_term)
    atoms = torch.stack([n_at, t, c_at, o_at], dim=-2)
    if m is not None:
        atoms = torch.where(m[..., None, None], atoms, torch.zeros_like(atoms))
    return atoms


# ----------------------------------------------------------------------------- centring and units


def centre(frames_or_coords: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Translate a protein so that the masked centre of mass of its residues is the origin.

    The centre of mass is the mean of the frames' translations (the CA atoms) or of the
    coordinates over the present residues; with no present residue it is zero. Centring
    rotates nothing.

    Args:
        frames_or_coords: frames ``(..., N, 4, 4)`` or coordinates ``(..., N, 3)``.
        mask: optional ``(..., N)`` mask of present residues; masked residues come back as
            identity frames or zero coordinates.

    Returns:
        ``(centred, com)``: the centred input (same shape) and the centres ``(..., 3)`` that
        were subtracted.

    Example:
        >>> import torch
        >>> from manifoldfm.frames import centre
        >>> x = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
        >>> centred, com = centre(x, mask=torch.tensor([True, True, False]))
        >>> com.tolist()
        [2.0, 0.0, 0.0]
        >>> centred.tolist()
        [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    x = _check_tensor(frames_or_coords, "frames_or_coords")
    is_frames = x.ndim >= 3 and x.shape[-2:] == (4, 4)
    if not is_frames and (x.ndim < 2 or x.shape[-1] != 3):
        raise ValueError(
            f"frames_or_coords must be frames (..., N, 4, 4) or coordinates (..., N, 3), "
            f"got {_shape(x)}"
        )
    pos = x[..., :3, 3] if is_frames else x
    m = _check_mask(mask, _shape(pos)[:-1], x.device)
    if m is None:
        com = pos.mean(-2) if pos.shape[-2] > 0 else pos.sum(-2)
        shifted = pos - com[..., None, :]
    else:
        w = m[..., None].to(pos.dtype)
        safe = torch.where(m[..., None], pos, torch.zeros_like(pos))
        com = (w * safe).sum(-2) / torch.clamp(w.sum(-2), min=1.0)
        shifted = torch.where(m[..., None], pos - com[..., None, :], torch.zeros_like(pos))
    if not is_frames:
        return shifted, com
    out = _join(x[..., :3, :3], shifted)
    if m is not None:
        out = torch.where(m[..., None, None], out, _identity_like(out))
    return out, com


def scale_translations(frames: Tensor, factor: float, *, mask: Tensor | None = None) -> Tensor:
    r"""Multiply the translations of frames by ``factor`` (change of length unit).

    ``scale_translations(f, 1 / ANGSTROM_PER_NM)`` converts Angstrom to nanometres and
    ``scale_translations(f, ANGSTROM_PER_NM)`` back. Rotations are unchanged.

    Args:
        frames: frames ``(..., N, 4, 4)``.
        factor: positive finite scale.
        mask: optional ``(..., N)`` mask; masked residues come back as identity frames.

    Returns:
        Frames of the same shape.

    Example:
        >>> import torch
        >>> from manifoldfm.frames import ANGSTROM_PER_NM, scale_translations
        >>> f = torch.eye(4).expand(1, 4, 4).clone()
        >>> f[0, :3, 3] = torch.tensor([10.0, -5.0, 2.5])
        >>> scale_translations(f, 1 / ANGSTROM_PER_NM)[0, :3, 3].tolist()
        [1.0, -0.5, 0.25]
    """
    frames = _check_frames(frames)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise TypeError(f"factor must be a number, got {type(factor).__name__}")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be finite and > 0, got {factor}")
    m = _check_mask(mask, _shape(frames)[:-2], frames.device)
    out = _join(frames[..., :3, :3], frames[..., :3, 3] * factor)
    if m is not None:
        out = torch.where(m[..., None, None], out, _identity_like(out))
    return out


# ----------------------------------------------------------------------------- PDB output

_ONE_TO_THREE = {
    "A": "ALA",
    "R": "ARG",
    "N": "ASN",
    "D": "ASP",
    "C": "CYS",
    "Q": "GLN",
    "E": "GLU",
    "G": "GLY",
    "H": "HIS",
    "I": "ILE",
    "L": "LEU",
    "K": "LYS",
    "M": "MET",
    "F": "PHE",
    "P": "PRO",
    "S": "SER",
    "T": "THR",
    "W": "TRP",
    "Y": "TYR",
    "V": "VAL",
    "X": "UNK",
}


def _atoms_array(atoms: Tensor | Mapping[str, Tensor]) -> tuple[Tensor, tuple[str, ...]]:
    """``(M, N, A, 3)`` float64 CPU coordinates and the atom names."""
    if isinstance(atoms, Mapping):
        unknown = [k for k in atoms if k not in BACKBONE_ATOMS]
        if unknown or not atoms:
            raise ValueError(
                f"atoms must map names among {BACKBONE_ATOMS} to coordinates, got keys "
                f"{sorted(map(str, atoms))}"
            )
        names = tuple(k for k in BACKBONE_ATOMS if k in atoms)
        parts = [torch.as_tensor(atoms[k]) for k in names]
        shapes = {_shape(p) for p in parts}
        if len(shapes) != 1:
            raise ValueError(
                f"atom coordinates differ in shape: {dict(zip(names, map(_shape, parts)))}"
            )
        x = torch.stack(parts, dim=-2)
    else:
        x = torch.as_tensor(atoms)
        if x.ndim not in (3, 4) or x.shape[-1] != 3 or not 1 <= x.shape[-2] <= 4:
            raise ValueError(
                "atoms must have shape (N, A, 3) or (models, N, A, 3) with A <= 4 atoms in the "
                f"order {BACKBONE_ATOMS}, got {_shape(x)}"
            )
        names = BACKBONE_ATOMS[: x.shape[-2]]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(
            f"atom coordinates must have shape (N, 3) or (models, N, 3), got {_shape(x)}"
        )
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"atom coordinates must be real numbers, got {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError("atoms must hold at least one residue")
    return x.detach().to(device="cpu", dtype=torch.float64), names


def _residue_names(sequence: str | Sequence[str] | None, n: int) -> list[str]:
    if sequence is None:
        return ["GLY"] * n
    if len(sequence) != n:
        raise ValueError(f"sequence has {len(sequence)} residues but atoms have {n}")
    if isinstance(sequence, str):
        bad = sorted({a for a in sequence if a.upper() not in _ONE_TO_THREE})
        if bad:
            raise ValueError(f"unknown one-letter residue code(s) {bad} in sequence")
        return [_ONE_TO_THREE[a.upper()] for a in sequence]
    names = [str(s).upper() for s in sequence]
    bad = sorted({s for s in names if not (1 <= len(s) <= 3 and s.isalnum())})
    if bad:
        raise ValueError(f"residue names must be 1 to 3 letters or digits, got {bad}")
    return names


def _fmt_coord(v: float) -> str:
    s = f"{v:8.3f}"
    if len(s) != 8:
        raise ValueError(
            f"coordinate {v:g} does not fit the PDB format (8.3f: -999.999 to 9999.999)"
        )
    return s


def write_pdb(
    file: str | os.PathLike[str] | IO[str],
    atoms: Tensor | Mapping[str, Tensor],
    *,
    sequence: str | Sequence[str] | None = None,
    chain: str = "A",
    mask: Tensor | None = None,
) -> None:
    r"""Write backbone atoms as a PDB file (ATOM records, TER, END; MODEL records for several).

    Fixed columns of the PDB format (version 3.3): record name 1-6, serial 7-11, atom name 13-16
    (one-letter elements start in column 14, as `` CA ``), residue name 18-20, chain 22, residue
    number 23-26, x/y/z 31-38/39-46/47-54 (``8.3f``), occupancy 55-60 (1.00), temperature factor
    61-66 (0.00), element 77-78 (right-justified). Residue ``i`` (0-based) is numbered ``i + 1``;
    masked residues are skipped and leave gaps in the numbering. Coordinates are in Angstrom.

    Args:
        file: a path, or a text file object to write to.
        atoms: coordinates ``(N, A, 3)`` or ``(models, N, A, 3)`` with the ``A <= 4`` atoms in the
            order N, CA, C, O; or a mapping from names among those to ``(N, 3)`` or
            ``(models, N, 3)`` coordinates.
        sequence: one-letter codes (a string of length N) or three-letter residue names;
            glycine when omitted.
        chain: chain identifier, one character.
        mask: optional ``(N,)`` mask of residues to write.

    Raises:
        ValueError: bad shapes, a sequence of the wrong length or with unknown codes, a chain
            identifier that is not one character, non-finite or out-of-range coordinates of
            written atoms, more than 99999 atoms or 9999 residues.

    Example:
        >>> import io, torch
        >>> from manifoldfm.frames import to_backbone, write_pdb
        >>> buf = io.StringIO()
        >>> write_pdb(buf, to_backbone(torch.eye(4).expand(1, 4, 4)), sequence="A")
        >>> print(buf.getvalue().splitlines()[1])
        ATOM      2  CA  ALA A   1       0.000   0.000   0.000  1.00  0.00           C
    """
    x, names = _atoms_array(atoms)
    n_models, n_res = x.shape[0], x.shape[1]
    if not isinstance(chain, str) or len(chain) != 1 or not chain.isprintable() or chain == " ":
        raise ValueError(f"chain must be one printable non-blank character, got {chain!r}")
    if n_res > 9999:
        raise ValueError(f"at most 9999 residues fit the PDB residue number column, got {n_res}")
    res_names = _residue_names(sequence, n_res)
    if mask is None:
        keep = [True] * n_res
    else:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if _shape(mask) != (n_res,):
            raise ValueError(f"mask must have shape ({n_res},), got {_shape(mask)}")
        keep = [bool(v) for v in (mask.detach().cpu() != 0).tolist()]
    if sum(keep) * len(names) > 99999:
        raise ValueError("more than 99999 atoms do not fit the PDB serial number column")
    kept = x[:, torch.tensor(keep, dtype=torch.bool)]
    if not bool(torch.isfinite(kept).all()):
        raise ValueError("atom coordinates to write are not finite (mask missing residues)")

    lines: list[str] = []
    for model in range(n_models):
        if n_models > 1:
            lines.append(f"MODEL     {model + 1:4d}")
        serial = 0
        last = 0
        for i in range(n_res):
            if not keep[i]:
                continue
            last = i
            for a, name in enumerate(names):
                serial += 1
                px, py, pz = x[model, i, a].tolist()
                lines.append(
                    f"ATOM  {serial:5d}  {name:<3s} {res_names[i]:>3s} {chain}"
                    f"{i + 1:4d}    {_fmt_coord(px)}{_fmt_coord(py)}{_fmt_coord(pz)}"
                    f"{1.0:6.2f}{0.0:6.2f}          {name[0]:>2s}  "
                )
        if serial > 0:
            lines.append(f"TER   {serial + 1:5d}      {res_names[last]:>3s} {chain}{last + 1:4d}")
        if n_models > 1:
            lines.append("ENDMDL")
    lines.append("END")
    text = "\n".join(line.rstrip() for line in lines) + "\n"
    if hasattr(file, "write"):
        file.write(text)  # type: ignore[union-attr]
    else:
        with open(os.fspath(file), "w", encoding="ascii") as fh:  # type: ignore[arg-type]
            fh.write(text)
