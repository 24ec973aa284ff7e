"""Draw one face frame with OpenCV primitives: shaded head, hair, eyes with lids, brows, nose, lips.

Action units (training.synthetic.expressions) move the features; the look and the projector come
from training.synthetic.face.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.synthetic.expressions import AU_INDEX
from training.synthetic.face import (
    SHIFT,
    Appearance,
    Color,
    Projector,
    curve,
    ellipse_pts,
    line,
    mix,
    poly,
    scale,
)


def draw_face(
    img: np.ndarray,
    look: Appearance,
    proj: Projector,
    au: np.ndarray,
    rounding: float,
    blink: float,
    gaze: tuple[float, float],
    light: float,
) -> None:
    """Draw the head, shoulders and all features onto ``img`` (RGB uint8) in place.

    ``light`` in [-1, 1] puts the key light on the subject's left (negative) or right.
    """
    a = {name: float(au[i]) for name, i in AU_INDEX.items()}
    asp = look.face_aspect
    skin = look.skin
    dark = scale(skin, 0.62)
    # shoulders and neck
    poly(img, proj.pix(ellipse_pts(0, asp + 1.55, 2.3, 1.0, np.pi, 2 * np.pi, 24), 0.0), look.shirt)
    poly(
        img,
        proj.pix(
            np.array([[-0.45, 0.3], [0.45, 0.3], [0.5, asp + 0.75], [-0.5, asp + 0.75]]), -0.3
        ),
        scale(skin, 0.72),
    )
    if look.hair_style == 1:  # long hair behind the head
        back = np.vstack(
            [
                ellipse_pts(0, -0.1, 1.22, asp * 1.05, np.pi, 2 * np.pi, 20),
                [[1.25, asp + 0.5], [-1.25, asp + 0.5]],
            ]
        )
        poly(img, proj.pix(back, -0.4), look.hair)
    for side in (-1, 1):  # ears
        poly(
            img,
            proj.pix(ellipse_pts(side * 0.98, 0.0, 0.15, 0.28, 0, 2 * np.pi, 12), -0.2),
            scale(skin, 0.85),
        )
    # head with soft shading: concentric ellipses drifting towards the light
    for k, f in enumerate(np.linspace(0.0, 1.0, 6)):
        r = 1.0 - 0.14 * f
        pts = ellipse_pts(light * 0.12 * f, -0.08 * f, r, asp * (1.0 - 0.1 * f), 0, 2 * np.pi, 36)
        poly(img, proj.pix(pts, 0.25 * k / 5), scale(skin, 0.8 + 0.26 * f))
    if look.beard > 0:
        beard = np.vstack(
            [
                ellipse_pts(0, 0.2, 0.96, asp - 0.2, 0.05 * np.pi, 0.95 * np.pi, 18),
                [[-0.6, 0.45], [0.6, 0.45]][::-1],
            ]
        )
        poly(img, proj.pix(beard, 0.3), mix(skin, look.hair, 0.28 * look.beard))
    _draw_hair(img, look, proj)
    _draw_forehead_and_brows(img, look, proj, a)
    for side in (-1, 1):
        _draw_eye(img, look, proj, a, side, blink, gaze)
    _draw_nose(img, look, proj, a, light, dark)
    _draw_mouth(img, look, proj, a, rounding)
    if look.glasses:
        for side in (-1, 1):
            rim = ellipse_pts(
                side * look.eye_dx,
                look.eye_y + 0.02,
                look.eye_w * 1.6,
                look.eye_w * 1.15,
                0,
                2 * np.pi,
                20,
            )
            cv2.polylines(
                img,
                [proj.pix(rim, 0.7).reshape(-1, 1, 2)],
                True,
                (30, 30, 30),
                1,
                cv2.LINE_AA,
                SHIFT,
            )
        bridge = np.array(
            [
                [-look.eye_dx + look.eye_w * 1.6, look.eye_y],
                [look.eye_dx - look.eye_w * 1.6, look.eye_y],
            ]
        )
        line(img, proj.pix(bridge, 0.8), (30, 30, 30), 1)


def _draw_hair(img: np.ndarray, look: Appearance, proj: Projector) -> None:
    asp = look.face_aspect
    if look.hair_style == 2:
        color = mix(look.skin, look.hair, 0.35)
        cap = ellipse_pts(0, -0.05, 1.02, asp * 1.02, 1.1 * np.pi, 1.9 * np.pi, 16)
        poly(img, proj.pix(np.vstack([cap, [[0.6, -asp * 0.6], [-0.6, -asp * 0.6]]]), 0.1), color)
        return
    top = ellipse_pts(0, -0.05, 1.08, asp * 1.08, 0.95 * np.pi, 2.05 * np.pi, 22)
    if look.hair_style == 3:  # fringe down to the brows
        line = curve(1.0, -1.0, -asp * 0.3, -asp * 0.3, -asp * 0.45)
    else:
        line = curve(1.0, -1.0, -asp * 0.1, -asp * 0.1, -asp * 0.6)
    poly(img, proj.pix(np.vstack([top, line]), 0.1), look.hair)


def _draw_forehead_and_brows(
    img: np.ndarray, look: Appearance, proj: Projector, a: dict[str, float]
) -> None:
    raise_all = 0.5 * a["brow_inner_up"] + a["brow_outer_up"]
    if raise_all > 0.25:  # forehead lines
        shade = mix(look.skin, scale(look.skin, 0.7), min(1.0, raise_all - 0.2))
        for k in range(3):
            y = look.eye_y - look.brow_gap - 0.16 - 0.09 * k
            line(img, proj.pix(curve(-0.45, 0.45, y, y, y - 0.04), 0.35), shade, 1)
    for side in (-1, 1):
        inner_y = look.eye_y - look.brow_gap - 0.24 * a["brow_inner_up"] + 0.13 * a["brow_lower"]
        mid_y = (
            look.eye_y
            - look.brow_gap
            - 0.05
            - 0.12 * a["brow_inner_up"]
            - 0.16 * a["brow_outer_up"]
            + 0.05 * a["brow_lower"]
        )
        outer_y = (
            look.eye_y
            - look.brow_gap
            + 0.02
            - 0.2 * a["brow_outer_up"]
            + 0.03 * a["brow_lower"]
            - 0.03 * a["brow_inner_up"]
        )
        inner_x = (
            side * (look.eye_dx - look.eye_w * 1.05 - 0.0)
            - side * 0.0
            + side * (-0.1 * a["brow_lower"])
        )
        outer_x = side * (look.eye_dx + look.eye_w * 1.35)
        xs = np.array([inner_x, side * look.eye_dx, outer_x])
        top = np.column_stack([xs, [inner_y, mid_y - 0.01, outer_y]])
        thick = np.array([look.brow_thick * 1.2, look.brow_thick, look.brow_thick * 0.5])
        bottom = np.column_stack([xs, top[:, 1] + thick])[::-1]
        poly(img, proj.pix(np.vstack([top, bottom]), 0.6), scale(look.hair, 0.9))
        if a["brow_lower"] > 0.35:  # glabella furrow
            g = np.array([[side * 0.05, inner_y + 0.02], [side * 0.07, inner_y + 0.14]])
            line(img, proj.pix(g, 0.6), mix(look.skin, (60, 40, 30), 0.5 * a["brow_lower"]), 1)


def _draw_eye(
    img: np.ndarray,
    look: Appearance,
    proj: Projector,
    a: dict[str, float],
    side: int,
    blink: float,
    gaze: tuple[float, float],
) -> None:
    cx, cy, w = side * look.eye_dx, look.eye_y, look.eye_w
    open_ = (
        0.5
        + 0.6 * a["upper_lid_raise"]
        - 0.3 * a["lid_tighten"]
        - 0.25 * a["cheek_raise"]
        - 0.3 * a["lid_droop"]
    )
    open_ = max(0.05, open_) * (1.0 - 0.95 * blink)
    up = w * 0.75 * open_
    low = w * (0.32 - 0.2 * a["cheek_raise"] - 0.1 * a["lid_tighten"] + 0.08 * a["upper_lid_raise"])
    low = max(low, 0.02) * (1.0 - 0.5 * blink)
    upper = curve(cx - w, cx + w, cy, cy - 0.02, cy - up)
    lower = curve(cx + w, cx - w, cy - 0.02, cy, cy + low)
    eye = np.vstack([upper, lower])
    socket = np.vstack([curve(cx - w * 1.25, cx + w * 1.25, cy + 0.02, cy, cy - w * 1.05), lower])
    poly(img, proj.pix(socket, 0.5), scale(look.skin, 0.97))
    poly(img, proj.pix(eye, 0.55), (236, 232, 226))
    ir = w * 0.5
    icx = cx + gaze[0] * w * 0.5
    icy = cy - 0.25 * up + 0.25 * low + gaze[1] * w * 0.2
    center = proj(np.array([[icx, icy]]), 0.6)[0]
    rad = max(1, round(ir * proj.s * 16))
    ci = (round(center[0] * 16), round(center[1] * 16))
    cv2.circle(img, ci, rad, look.iris, -1, cv2.LINE_AA, SHIFT)
    cv2.circle(img, ci, max(1, rad // 2), (15, 12, 12), -1, cv2.LINE_AA, SHIFT)
    # lids drawn over the iris: skin above the upper lid, below the lower lid
    lid = np.vstack(
        [upper, curve(cx + w * 1.1, cx - w * 1.1, cy - w * 0.1, cy - w * 0.1, cy - w * 1.0)]
    )
    poly(img, proj.pix(lid, 0.55), scale(look.skin, 1.0))
    under = np.vstack([lower, curve(cx - w * 1.1, cx + w * 1.1, cy + 0.01, cy, cy + w * 0.9)])
    poly(img, proj.pix(under, 0.55), scale(look.skin, 1.02 - 0.08 * a["cheek_raise"]))
    line(img, proj.pix(upper, 0.56), (35, 25, 22), max(1.0, proj.s * 0.035))
    crease = curve(cx - w * 0.9, cx + w * 0.9, cy - up * 0.6, cy - up * 0.6, cy - up - w * 0.35)
    line(img, proj.pix(crease, 0.55), scale(look.skin, 0.72), 1)
    if a["cheek_raise"] > 0.3:  # crow's feet
        for k in (-1, 0, 1):
            p = np.array(
                [[cx + side * w * 1.15, cy + 0.02 * k], [cx + side * w * 1.45, cy + 0.07 * k]]
            )
            line(img, proj.pix(p, 0.45), scale(look.skin, 0.78), 1)


def _draw_nose(
    img: np.ndarray,
    look: Appearance,
    proj: Projector,
    a: dict[str, float],
    light: float,
    dark: Color,
) -> None:
    top_y = look.eye_y + 0.02
    tip_y = look.eye_y + look.nose_len - 0.03 * a["nose_wrinkle"]
    nw = look.nose_w * (1.0 + 0.2 * a["nose_wrinkle"] + 0.1 * a["upper_lip_raise"])
    shade_side = 1 if light < 0 else -1
    ridge = np.array(
        [
            [shade_side * 0.08, top_y],
            [shade_side * 0.1, tip_y - 0.15],
            [shade_side * nw * 0.9, tip_y - 0.02],
        ]
    )
    line(img, proj.pix(ridge, 0.9), mix(look.skin, dark, 0.6), max(1.0, proj.s * 0.03))
    tip = ellipse_pts(0, tip_y - 0.02, nw * 0.55, 0.07, 0, 2 * np.pi, 14)
    poly(img, proj.pix(tip, 1.0), scale(look.skin, 1.06))
    for side in (-1, 1):
        wing = curve(side * nw * 0.4, side * nw, tip_y + 0.04, tip_y - 0.05, tip_y + 0.07, 7)
        line(img, proj.pix(wing, 0.85), mix(look.skin, dark, 0.7), 1)
        nostril = ellipse_pts(side * nw * 0.45, tip_y + 0.045, nw * 0.22, 0.03, 0, 2 * np.pi, 10)
        poly(img, proj.pix(nostril, 0.9), scale(dark, 0.6))
    if a["nose_wrinkle"] > 0.25:
        shade = mix(look.skin, dark, min(1.0, a["nose_wrinkle"]))
        for k in range(3):
            y = top_y + 0.05 + 0.045 * k
            line(img, proj.pix(np.array([[-0.09, y], [0.0, y - 0.02], [0.09, y]]), 0.8), shade, 1)


def _draw_mouth(
    img: np.ndarray, look: Appearance, proj: Projector, a: dict[str, float], rounding: float
) -> None:
    my = look.mouth_y
    mw = look.mouth_w * (
        1
        + 0.35 * a["lip_corner_pull"]
        + 0.45 * a["lip_stretch"]
        - 0.12 * a["lip_press"]
        - 0.3 * rounding
    )
    corner_y = (
        my - 0.2 * a["lip_corner_pull"] + 0.18 * a["lip_corner_depress"] + 0.02 * a["lip_stretch"]
    )
    jaw = 0.3 * a["jaw_drop"]
    t = look.lip_thick * (1.0 - 0.55 * a["lip_press"])
    up_in = my - 0.015 - 0.1 * a["upper_lip_raise"] - 0.015 * a["lip_corner_pull"]
    low_in = my + jaw - 0.03 * a["chin_raise"]
    depth = 0.75
    # nasolabial folds
    fold = 0.05 + 0.8 * a["lip_corner_pull"] + 0.6 * a["nose_wrinkle"] + 0.5 * a["upper_lip_raise"]
    fold_c = mix(look.skin, scale(look.skin, 0.68), min(1.0, fold))
    nose_y = look.eye_y + look.nose_len
    for side in (-1, 1):
        f = curve(
            side * look.nose_w * 1.2,
            side * (mw + 0.08),
            nose_y - 0.02,
            corner_y + 0.05,
            nose_y + 0.12,
            7,
        )
        line(img, proj.pix(f, 0.7), fold_c, max(1.0, proj.s * 0.025))
    outer_top = curve(-mw, mw, corner_y, corner_y, up_in - t * 1.1)
    outer_bot = curve(mw, -mw, corner_y, corner_y, low_in + t * 1.3)
    poly(img, proj.pix(np.vstack([outer_top, outer_bot]), depth), look.lips)
    gap = low_in - up_in
    if gap > 0.035:
        inner_top = curve(-mw * 0.92, mw * 0.92, corner_y, corner_y, up_in)
        inner_bot = curve(mw * 0.92, -mw * 0.92, corner_y, corner_y, low_in)
        poly(img, proj.pix(np.vstack([inner_top, inner_bot]), depth), (45, 18, 22))
        teeth_h = min(gap * 0.5, 0.06 + 0.05 * a["upper_lip_raise"] + 0.04 * a["lip_corner_pull"])
        teeth = np.vstack([inner_top[1:-1], inner_top[-2:0:-1] + np.array([0.0, teeth_h])])
        poly(img, proj.pix(teeth, depth), (228, 224, 212))
    else:
        seam = curve(-mw, mw, corner_y, corner_y, 0.5 * (up_in + low_in))
        line(img, proj.pix(seam, depth), scale(look.lips, 0.45), max(1.0, proj.s * 0.025))
    if a["chin_raise"] > 0.3:
        chin = curve(-0.18, 0.18, low_in + t + 0.14, low_in + t + 0.14, low_in + t + 0.1, 5)
        line(img, proj.pix(chin, 0.6), scale(look.skin, 0.8), 1)
