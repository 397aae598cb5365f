"""The legacy metric path of the official Tipsomaly code (``utils/metrics.py`` at 7eb43a7), straightforwardly.

Kept only as the baseline of ``bench_metrics.py``. Image metrics and the pixel F1-max use scikit-learn exactly as
there; the pixel AUROC uses ``sklearn.metrics.roc_auc_score`` (the official code uses torchmetrics ``AUROC``, which
is not a zsad dependency; both sort all pixels and agree to ~1e-7); the AUPRO is the 200-threshold loop
``cal_pro_score_gpu`` run on CPU tensors: for every threshold a whole-array compare, and for every region a gather
followed by ``.item()``.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage import measure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score


def calc_f1_max(gt, pr) -> float:
    precisions, recalls, _ = precision_recall_curve(gt, pr)
    with np.errstate(invalid="ignore"):  # 0/0 at the curve's end, dropped below as in the official code
        f1_scores = (2 * precisions * recalls) / (precisions + recalls)
    return float(np.max(f1_scores[np.isfinite(f1_scores)]))


def cal_pro_score(masks: torch.Tensor, amaps: torch.Tensor, max_step: int = 200, expect_fpr: float = 0.3) -> float:
    """The official grid AUPRO: 200 thresholds on [min, max), FPR < 0.3 kept and min-max rescaled, sklearn auc."""
    binary_amaps = torch.zeros_like(amaps, dtype=torch.bool)
    min_th, max_th = amaps.min().item(), amaps.max().item()
    delta = (max_th - min_th) / max_step
    pros, fprs = [], []
    regionprops_list = [measure.regionprops(measure.label(mask.numpy())) for mask in masks]
    coords_list = [[(r.coords[:, 0], r.coords[:, 1], len(r.coords)) for r in props] for props in regionprops_list]
    inverse_masks = 1 - masks
    tn_pixel = inverse_masks.sum().item()
    for th in torch.arange(min_th, max_th, delta):
        binary_amaps[amaps <= th], binary_amaps[amaps > th] = 0, 1
        pro = []
        for binary_amap, regions_coords in zip(binary_amaps, coords_list):
            for rows, cols, area in regions_coords:
                tp_pixels = binary_amap[rows, cols].sum().item()
                pro.append(tp_pixels / area)
        fp_pixels = torch.logical_and(inverse_masks, binary_amaps).sum().item()
        pros.append(np.mean(pro))
        fprs.append(fp_pixels / tn_pixel)
    pros, fprs = torch.tensor(pros), torch.tensor(fprs)
    idxes = fprs < expect_fpr
    fprs = fprs[idxes]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return auc(fprs.numpy(), pros[idxes].numpy())


def legacy_all_metrics(scores: np.ndarray, labels: np.ndarray, maps: np.ndarray, masks: np.ndarray) -> dict:
    """The six numbers of one class the official way: image auroc/ap/f1_max, pixel auroc/aupro/f1_max."""
    gt, pr = masks.ravel(), maps.ravel()
    return {
        "image_auroc": roc_auc_score(labels, scores),
        "image_ap": average_precision_score(labels, scores),
        "image_f1_max": calc_f1_max(labels, scores),
        "pixel_auroc": roc_auc_score(gt, pr),
        "pixel_aupro": cal_pro_score(torch.from_numpy(masks.view(np.uint8)), torch.from_numpy(maps)),
        "pixel_f1_max": calc_f1_max(gt, pr),
    }
