"""One ANTs (antspyx) registration as a whole process, for benchmarks/run_benchmark.py.

usage: python ants_worker.py MOVING FIXED MOVING_LABELS OUT_DIR [--type SyN|SyNCC|Affine] [--ct]

``--ct``: register the images shifted to HU + 1024 (clamped at 0): ANTs' default start is the
intensity-weighted centre of mass, which negative HU (air at -1000) throws off.

Writes OUT_DIR/warped_labels.nii.gz (nearest neighbour) and OUT_DIR/field.nii.gz (dense
fixed→moving displacement of the whole ANTs transform on the fixed grid, ITK convention), and
prints one line ``RESULT {json}`` with the registration call's seconds (``reg_seconds``).
ITK uses 2 threads (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS, set by the caller).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("moving")
    ap.add_argument("fixed")
    ap.add_argument("moving_labels")
    ap.add_argument("out")
    ap.add_argument("--type", default="SyN")
    ap.add_argument("--ct", action="store_true", help="shift HU to HU + 1024 (>= 0) before registering")
    a = ap.parse_args()
    import ants
    import SimpleITK as sitk

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    f = ants.image_read(a.fixed)
    m = ants.image_read(a.moving)
    if a.ct:
        import numpy as np

        f, m = (im.new_image_like(np.clip(im.numpy() + 1024.0, 0.0, None)) for im in (f, m))
    t0 = time.perf_counter()
    reg = ants.registration(f, m, type_of_transform=a.type, outprefix=str(out / "ants_"))
    reg_seconds = time.perf_counter() - t0
    fwd = reg["fwdtransforms"]  # antsApplyTransforms order: the warp acts first on fixed points
    labels = ants.apply_transforms(fixed=f, moving=ants.image_read(a.moving_labels), transformlist=fwd,
                                   interpolator="nearestNeighbor")
    ants.image_write(labels, str(out / "warped_labels.nii.gz"))
    # sitk.CompositeTransform applies the LAST added transform first: add in reversed(fwd) order
    comp = sitk.CompositeTransform(3)
    for p in reversed(fwd):
        if p.endswith(".mat"):
            comp.AddTransform(sitk.ReadTransform(p))
        else:
            comp.AddTransform(sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(p), sitk.sitkVectorFloat64)))
    ref = sitk.ReadImage(a.fixed)
    disp = sitk.TransformToDisplacementField(comp, sitk.sitkVectorFloat64, ref.GetSize(), ref.GetOrigin(),
                                             ref.GetSpacing(), ref.GetDirection())
    sitk.WriteImage(sitk.Cast(disp, sitk.sitkVectorFloat32), str(out / "field.nii.gz"))
    print("RESULT " + json.dumps({"reg_seconds": reg_seconds}), flush=True)


if __name__ == "__main__":
    main()
