"""MTCNN's cascade, with every candidate of a batch cut out in one call (the detector of record's
networks, weights and arithmetic).

This is facenet-pytorch's `detect_face` (models/utils/detect_face.py, v2.5.3) step for step, on
its networks and weights (models/networks/mtcnn.py), with its helpers written out below (its
module imports torchvision, seconds of a run's start), changed in these ways:

1. The R- and O-net inputs. facenet-pytorch cuts each candidate box out of its frame and shrinks
   it to 24x24 (48x48) with one `interpolate(mode="area")` call per box: thousands of calls a
   second on a crowd (9,186 on a 275-frame clip; a fifth of MTCNN's time). Area interpolation is
   adaptive average pooling: output cell i of a side of L input pixels averages pixels
   floor(i L / S) .. ceil((i+1) L / S) - 1. `crop_area` makes every cell of every box at once
   from a summed-area table of the batch (four lookups per cell), the same averages to float
   rounding (tests/test_mtcnn.py: the same boxes and landmarks as `MTCNN.detect`).
2. Its helpers' imports: torchvision's NMS is replaced by OpenCV's (the same greedy rule).
3. P-net's pyramid levels (its `imresample`, `interpolate(mode="area")` of the whole frame) are
   made from the same table in a third of the time (`level_part`): on a CPU the same cells and
   values bit for bit; on CUDA, where torch's kernel multiplies by the cell's reciprocal area,
   within a float rounding step; on 8K frames exact where torch's float sums are not.
   `regions`: P-net may look in parts of a frame only (around the faces being tracked). Each
   pyramid level is then made for those parts alone, cell for cell the whole level's, and P-net
   runs on them at an even cell offset (its stride), keeping only the windows that lie wholly
   inside: the very windows, scores and boxes a whole-frame scan gives there. R- and O-net see
   the same crops either way, so a face inside a region gets the whole frame's box, not one that
   moves with the region's pixel phase.
4. `refine_faces`: the last stage alone, O-net on given squares (a tracker's faces, each shown the
   square O-net saw when it was found, moved with it): the check of a face the flow followed.

Contract: `frames` `[B, H, W, 3]` uint8 RGB; `regions` None, or per image a list of
`(x0, y0, x1, y1)` pixel rectangles; returns per image `boxes [N, 9]` (x0, y0, x1, y1, score,
in the frame's pixels, as facenet-pytorch's `detect_face` gives them, then the square O-net was
shown) and `points [N, 5, 2]`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

PNET_WINDOW = 12  # px: the face size PNet sees at scale 1


def pyramid(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """facenet-pytorch's scales: 12 / min_face, times `factor` while the image still holds a 12 px window."""
    m = PNET_WINDOW / min_face
    minl = min(height, width) * m
    scales, scale = [], m
    while minl >= PNET_WINDOW:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor
    return scales


# ---- facenet-pytorch's helpers (models/utils/detect_face.py, MIT licence), the same arithmetic;
# written out here because importing that module imports torchvision (see models/networks/mtcnn.py).

def generate_boxes(reg: torch.Tensor, probs: torch.Tensor, scale: float, thresh: float, offset: tuple[int, int] = (0, 0)
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """P-net's windows scoring >= thresh: `[M, 9]` (x0, y0, x1, y1 in image px, score, 4 offsets), image indices `[M]`.
    `offset`: the (x, y) output cell of the whole level that `probs`' first cell is (a part of a level)."""
    stride, cellsize = 2, 12
    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= thresh
    mask_inds = mask.nonzero()
    image_inds = mask_inds[:, 0]
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    bb = mask_inds[:, 1:].type(reg.dtype).flip(1) + torch.tensor(offset, dtype=reg.dtype, device=reg.device)
    q1 = ((stride * bb + 1) / scale).floor()
    q2 = ((stride * bb + cellsize - 1 + 1) / scale).floor()
    return torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1), image_inds


def bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Move each box by its regression offsets (in box units, "+1" widths), in place."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = torch.stack([boxes[:, 0] + reg[:, 0] * w, boxes[:, 1] + reg[:, 1] * h,
                                boxes[:, 2] + reg[:, 2] * w, boxes[:, 3] + reg[:, 3] * h]).permute(1, 0)
    return boxes


def rerec(boxes: torch.Tensor) -> torch.Tensor:
    """Square each box around its centre (side = its longer side), in place."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def pad(boxes: torch.Tensor, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer boxes clipped to the image, 1-based: y, ey, x, ex."""
    boxes = boxes.trunc().int().cpu().numpy()
    x, y, ex, ey = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    x[x < 1] = 1
    y[y < 1] = 1
    ex[ex > w] = w
    ey[ey > h] = h
    return y, ey, x, ex


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, image_inds: torch.Tensor, threshold: float) -> torch.Tensor:
    """torchvision's `batched_nms` (greedy, IoU > threshold suppressed, per image; kept indices by
    score, best first), with OpenCV's NMS, which needs no torchvision."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    b = boxes.detach().cpu().to(torch.float64).numpy()
    s = scores.detach().cpu().to(torch.float32).numpy()
    inds = image_inds.cpu().numpy()
    keep = []
    for image in np.unique(inds):
        members = np.flatnonzero(inds == image)
        xywh = np.concatenate([b[members, :2], b[members, 2:4] - b[members, :2]], axis=1)
        kept = cv2.dnn.NMSBoxes(xywh, s[members], 0.0, threshold)
        keep.append(members[np.asarray(kept, dtype=np.int64).reshape(-1)])
    keep = np.concatenate(keep)
    keep = keep[np.lexsort((keep, -s[keep]))]  # by score, best first; ties by index, as a stable sort
    return torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)


def batched_nms_min(boxes: torch.Tensor, scores: torch.Tensor, image_inds: torch.Tensor, threshold: float) -> torch.Tensor:
    """facenet-pytorch's last NMS: overlap over the smaller box ("Min"), per image, greedy by score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    offsets = image_inds.to(boxes) * (boxes.max() + 1)
    b = (boxes + offsets[:, None]).cpu().numpy()
    s = scores.cpu().numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(s)
    pick = []
    while order.size > 0:
        i, rest = order[-1], order[:-1]
        pick.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        order = rest[w * h / np.minimum(area[i], area[rest]) <= threshold]
    return torch.as_tensor(np.array(pick, dtype=np.int64), device=boxes.device)


def run_net(net, im_data: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, ...]:
    """`net` over `im_data` in batches of 512 (facenet-pytorch's `fixed_batch_process`)."""
    out = [net(im_data[i : i + batch_size]) for i in range(0, len(im_data), batch_size)]
    return tuple(torch.cat(v, dim=0) for v in zip(*out))


def summed_area(frames: torch.Tensor) -> torch.Tensor:
    """`[B, H, W, C]` uint8 -> `[B, H + 1, W + 1, C]` int32: the sum of the pixels above and left of
    each corner, modulo 2^32: past 8.4 Mpx of bright pixels an entry wraps, but only differences
    of entries are ever used, exact while the box they sum holds under 8.4 Mpx. On a CPU, OpenCV's
    `integral` (the same integers, a tenth of the time of two int32 cumsums: 2 ms a 640x360 frame)."""
    if frames.device.type == "cpu" and frames.shape[3] <= 4:
        return torch.from_numpy(np.stack([cv2.integral(f, sdepth=cv2.CV_32S) for f in frames.numpy()]))
    table = torch.zeros(frames.shape[0], frames.shape[1] + 1, frames.shape[2] + 1, frames.shape[3], dtype=torch.int32, device=frames.device)
    table[:, 1:, 1:] = frames.to(torch.int32).cumsum(1).cumsum(2)
    return table


def _cells(start: torch.Tensor, end: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive pooling's cell edges for spans [start, end): `[N, size]` first and one-past-last pixels."""
    length = (end - start)[:, None]  # [N, 1]
    i = torch.arange(size, device=start.device)[None]  # [1, S]
    first = start[:, None] + torch.div(i * length, size, rounding_mode="floor")
    last = start[:, None] + torch.div((i + 1) * length + size - 1, size, rounding_mode="floor")
    return first, last


def crop_area(table: torch.Tensor, image: torch.Tensor, y0, y1, x0, x1, size: int) -> torch.Tensor:
    """Each box `image[n], rows y0..y1-1, columns x0..x1-1` (integer tensors `[N]`) of the frames
    whose `summed_area` is `table`, shrunk to `size` x `size` by area averaging: `[N, C, size, size]` float32."""
    _, rows, cols, channels = table.shape
    ya, yb = _cells(y0, y1, size)  # [N, S]
    xa, xb = _cells(x0, x1, size)
    flat = table.reshape(-1)
    c = torch.arange(channels, device=table.device)

    def at(y, x):  # table[image, y, x, :] for every cell: [N, S, S, C]
        offset = ((image[:, None] * rows + y) * cols)[:, :, None] + x[:, None, :]  # [N, S, S]
        return flat.take(offset[..., None] * channels + c)

    sums = at(yb, xb) - at(ya, xb) - at(yb, xa) + at(ya, xa)
    area = (yb - ya)[:, :, None] * (xb - xa)[:, None, :]  # [N, S, S]
    return (sums.to(torch.float32) / area[..., None].to(torch.float32)).permute(0, 3, 1, 2)


def level_cells(first: int, stop: int, size: int, level: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells `first..stop-1` of a side of `size` pixels pooled to `level` cells (adaptive pooling,
    as `imresample` makes a pyramid level): their first and one-past-last pixels, `[stop - first]` each."""
    i = torch.arange(first, stop, device=device)
    return torch.div(i * size, level, rounding_mode="floor"), torch.div((i + 1) * size + level - 1, level, rounding_mode="floor")


def level_part(table: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], height: int, width: int,
               level: tuple[int, int]) -> torch.Tensor:
    """Rows `rows[0]..rows[1]-1` and columns `cols[0]..cols[1]-1` of a pyramid level of `level` =
    (rows, columns) cells, from the frames' `summed_area` `table` `[B, H + 1, W + 1, C]`:
    `[B, C, R, K]` float32, the values `imresample` gives there on a CPU (integer sums, divided by
    the cell's rows, then its columns). The sums are taken a side at a time (rows, then columns of
    the strips): a third of the time of torch's adaptive pooling on a frame."""
    ya, yb = level_cells(*rows, height, level[0], table.device)
    xa, xb = level_cells(*cols, width, level[1], table.device)
    strips = _take(table, yb, 1) - _take(table, ya, 1)  # [B, R, W + 1, C]
    sums = (_take(strips, xb, 2) - _take(strips, xa, 2)).to(torch.float32)
    part = sums / (yb - ya).to(torch.float32)[:, None, None] / (xb - xa).to(torch.float32)[None, :, None]
    return part.permute(0, 3, 1, 2)  # [B, C, R, K], channels-last in memory, as `imresample` gives


def _take(t: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """`t.index_select(dim, index)`; on a CPU by NumPy, which gathers these in half the time."""
    if t.device.type != "cpu":
        return t.index_select(dim, index)
    return torch.from_numpy(np.take(t.numpy(), index.numpy(), axis=dim))


def _pnet_regions(pnet, table: torch.Tensor, regions, height: int, width: int, scale: float, thresh: float):
    """P-net's windows on one pyramid level, only in `regions` (per image, pixel rectangles), as the
    whole level gives them: `[M, 9]` boxes and image indices `[M]` (see `generate_boxes`)."""
    level = (int(height * scale + 1), int(width * scale + 1))
    boxes, image_inds = [], []
    for image, rects in enumerate(regions):
        for x0, y0, x1, y1 in rects:
            # The level's cells over the rectangle, from an even cell (P-net's stride is 2).
            r0, c0 = int(y0 * level[0] / height) // 2 * 2, int(x0 * level[1] / width) // 2 * 2
            r1, c1 = min(level[0], math.ceil(y1 * level[0] / height)), min(level[1], math.ceil(x1 * level[1] / width))
            if r1 - r0 < PNET_WINDOW or c1 - c0 < PNET_WINDOW:
                continue
            im = (level_part(table[image : image + 1], (r0, r1), (c0, c1), height, width, level) - 127.5) * 0.0078125
            reg, probs = pnet(im)
            # Windows that run past the part's edge are not the whole level's (unless the level ends there).
            ny = probs.shape[2] if r1 == level[0] else (r1 - r0 - PNET_WINDOW) // 2 + 1
            nx = probs.shape[3] if c1 == level[1] else (c1 - c0 - PNET_WINDOW) // 2 + 1
            b, _ = generate_boxes(reg[:, :, :ny, :nx], probs[:, 1, :ny, :nx], scale, thresh, offset=(c0 // 2, r0 // 2))
            boxes.append(b)
            image_inds.append(torch.full((len(b),), image, dtype=torch.int64, device=b.device))
    if not boxes:
        return torch.zeros(0, 9, device=table.device), torch.zeros(0, dtype=torch.int64, device=table.device)
    return torch.cat(boxes), torch.cat(image_inds)


def _crops(table: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor, width: int, height: int, size: int):
    """The inputs of the next net for `boxes` (facenet-pytorch's `pad` and 1-based slices), and
    which boxes have any pixels (facenet-pytorch leaves empty ones out)."""
    y, ey, x, ex = (torch.as_tensor(v, dtype=torch.int64, device=table.device) for v in pad(boxes, width, height))
    keep = (ey > y - 1) & (ex > x - 1)
    im = crop_area(table, image_inds[keep].to(torch.int64), y[keep] - 1, ey[keep], x[keep] - 1, ex[keep], size)
    return (im - 127.5) * 0.0078125, keep


def _pnet(frames: torch.Tensor, pnet, table, regions, *, min_face: float, threshold: float, factor: float):
    """Step 1: P-net's windows over the pyramid (whole images, or `regions`), each level made from
    the frames' `summed_area` `table`, after NMS within each scale and image: `[M, 9]` boxes and
    image indices `[M]`."""
    _, h, w, _ = frames.shape
    boxes, image_inds = [], []
    for scale in pyramid(h, w, min_face, factor):
        if regions is None:
            level = (int(h * scale + 1), int(w * scale + 1))
            reg, probs = pnet((level_part(table, (0, level[0]), (0, level[1]), h, w, level) - 127.5) * 0.0078125)
            boxes_scale, inds_scale = generate_boxes(reg, probs[:, 1], scale, threshold)
        else:
            boxes_scale, inds_scale = _pnet_regions(pnet, table, regions, h, w, scale, threshold)
        pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], inds_scale, 0.5)
        boxes.append(boxes_scale[pick])
        image_inds.append(inds_scale[pick])
    return torch.cat(boxes), torch.cat(image_inds)


def detect_faces(frames: torch.Tensor, pnet, rnet, onet, *, min_face: float, thresholds, factor: float, regions=None
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """MTCNN on a batch `[B, H, W, 3]` uint8 RGB (see the module docstring): per image, boxes `[N, 9]`
    (x0, y0, x1, y1, score, and the square O-net was shown: `refine_faces` looks there again) and
    points `[N, 5, 2]`. `regions`: per image, the `(x0, y0, x1, y1)` pixel rectangles P-net looks
    in (None: the whole images)."""
    batch_size, h, w, _ = frames.shape
    if regions is not None and len(regions) != batch_size:
        raise ValueError(f"regions must hold one list of rectangles per frame: got {len(regions)} for {batch_size} frames")
    table = summed_area(frames)
    # 1. P-net over the pyramid; NMS within each scale and image, then within each image.
    boxes, image_inds = _pnet(frames, pnet, table, regions, min_face=min_face, threshold=thresholds[0], factor=factor)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                         boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]]).permute(1, 0)
    boxes = rerec(boxes)

    # 2. R-net on every candidate at once.
    if len(boxes):
        im_data, keep = _crops(table, boxes, image_inds, w, h, 24)
        boxes, image_inds = boxes[keep], image_inds[keep]
        out = run_net(rnet, im_data)
        score = out[1][:, 1]
        ipass = score > thresholds[1]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds, mv = image_inds[ipass], out[0][ipass]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
        boxes = rerec(bbreg(boxes, mv))

    # 3. O-net on every survivor at once: scores, box regression, landmarks; NMS by "Min".
    boxes, image_inds, points, _ = _onet(table, boxes, image_inds, w, h, onet, thresholds[2])
    return _per_image(boxes, points, image_inds, batch_size)


def refine_faces(frames: torch.Tensor, onet, boxes: list[np.ndarray], *, threshold: float
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The cascade's last stage alone, on given boxes: per image, `boxes[b]` `[K, 4]` (x0, y0, x1, y1 px,
    where faces are expected: the squares O-net was shown when they were found, moved with them)
    are squared as R-net's output is, and O-net scores them, moves them by its box regression and
    places the landmarks. Per image: the boxes scoring over `threshold`, `[N, 9]` as `detect_faces`
    gives them, their points, and which of `boxes[b]` each came from `[N]` (each box is its own
    candidate: no NMS between them). One O-net pass a box: a fraction of a millisecond, where a
    search around the box runs all three networks on every candidate there."""
    batch_size, h, w, _ = frames.shape
    given = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
    first = np.concatenate([[0], np.cumsum([len(b) for b in given])])
    image_inds = torch.as_tensor(np.repeat(np.arange(len(given)), np.diff(first)), dtype=torch.int64, device=frames.device)
    candidates = torch.as_tensor(np.concatenate(given), device=frames.device)
    candidates = rerec(torch.cat([candidates, torch.ones(len(candidates), 1, device=frames.device)], dim=1))
    table = summed_area(frames) if len(candidates) else None
    found, image_inds, points, which = _onet(table, candidates, image_inds, w, h, onet, threshold, nms=False)
    boxes_out, points_out = _per_image(found, points, image_inds, batch_size)
    image_inds, which = image_inds.cpu().numpy(), which.cpu().numpy()
    return boxes_out, points_out, [which[image_inds == b] - first[b] for b in range(batch_size)]


def _onet(table, boxes, image_inds, w: int, h: int, onet, threshold: float, *, nms: bool = True):
    """O-net on every candidate at once (boxes `[M, 5]`, squared): those scoring over `threshold`,
    moved by its box regression, after NMS by "Min" (`nms`): `[N, 9]` (x0, y0, x1, y1, score, then
    the box O-net was shown), their image indices, their landmarks `[N, 5, 2]` and which of the
    M candidates each is `[N]`."""
    points = torch.zeros(0, 5, 2, device=boxes.device)
    which = torch.arange(len(boxes), device=boxes.device)
    if len(boxes) == 0:
        return torch.zeros(0, 9, device=boxes.device), image_inds, points, which
    im_data, keep = _crops(table, boxes, image_inds, w, h, 48)
    boxes, image_inds, which = boxes[keep], image_inds[keep], which[keep]
    out = run_net(onet, im_data)
    score = out[2][:, 1]
    ipass = score > threshold
    points = out[1][ipass].permute(1, 0)  # [10, M]
    boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
    image_inds, mv, which = image_inds[ipass], out[0][ipass], which[ipass]
    w_i, h_i = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    points_x = w_i.repeat(5, 1) * points[:5, :] + boxes[:, 0].repeat(5, 1) - 1
    points_y = h_i.repeat(5, 1) * points[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
    points = torch.stack((points_x, points_y)).permute(2, 1, 0)  # [M, 5, 2]
    shown = boxes[:, :4].clone()
    boxes = bbreg(boxes, mv)
    pick = batched_nms_min(boxes[:, :4], boxes[:, 4], image_inds, 0.7) if nms else torch.arange(len(boxes), device=boxes.device)
    return torch.cat([boxes, shown], dim=1)[pick], image_inds[pick], points[pick], which[pick]


def _per_image(boxes: torch.Tensor, points: torch.Tensor, image_inds: torch.Tensor, batch_size: int):
    """Per image of the batch: its boxes `[N, 9]` and points `[N, 5, 2]`, numpy."""
    boxes, points, image_inds = boxes.cpu().numpy(), points.cpu().numpy(), image_inds.cpu().numpy()
    return [boxes[image_inds == b] for b in range(batch_size)], [points[image_inds == b] for b in range(batch_size)]
