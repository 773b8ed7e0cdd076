"""`python -m export COMMAND`: the workstation toolchain (evaluate runs in the device environment)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge.errors import EdgeError

COMMANDS = {
    "evaluate": ("export.evaluate", "accuracy of the shipped model through the device pipeline on an npz"),
    "mask": ("export.cli_mask", "write a copy of an npz with every face masked by our generator"),
    "darken": ("export.darken", "write a dark rendering of an npz (linear-light scaling, shot + read noise, 8-bit)"),
    "classes": ("export.classes", "the 5-class set (vision.classes = 5): calibrate its \"not sure\" threshold on validation, measure it beside 7 classes"),
    "build": ("export.build", "export the trained checkpoint to ONNX/TFLite fp32+int8, check parity, write models/"),
    "lowlight": ("export.lowlight", "compare the low-light enhancer with TBEFN, SCI, gamma/CLAHE and none; write models/ENHANCER_CARD.md"),
    "scene": ("export.scene", "found rate of the main face at 0.5-4 m: real photos rendered through a camera model, day/masked/dark, through the device pipeline"),
    "distance": ("export.distance", "expression accuracy against face size: PublicTest faces degraded to 0.5-4 m through a camera model, unmasked/masked, through the device pipeline"),
    "saliency": ("export.saliency", "where the shipped model looks: occlusion-sensitivity sheet of PublicTest faces, unmasked and masked, and the share on the mask"),
    "lightcurve": ("export.lightcurve", "accuracy, share answered and accuracy when answered over light level (2-200 photo-electrons per mid-tone pixel) through a camera model; --calibrate fits the readability rule on Training faces"),
    "burst": ("export.burst", "what fusing one face's readings over a burst of frames (up to 300 ms, small head shake) gains over one frame, per light level, unmasked/masked"),
    "families": ("export.families", "the shipped model on every mask family (export.masks.FAMILIES) of PublicTest through the device pipeline, and what it says on the real masked photos → models/results/families.json"),
    "lofo": ("export.lofo", "leave-one-family-out training (short recipe): each mask family held out in turn, held-out vs in-family accuracy → models/results/lofo.json"),
    "cv": ("export.cv", "K-fold cross-validation of the training recipe: each fold's validation accuracy (clean/masked/dark), mean ± std → models/results/cv.json"),
    "reconstruct": ("export.reconstruct", "lower-face reconstruction, then classify (Shaikh et al.): train a small inpainter on masked Training faces, read PublicTest masked per mask kind with and without it through the device pipeline, cost per face → models/results/reconstruction.json"),
    "enhancer": ("export.enhancer", "train the low-light enhancer on dark renderings, export ONNX/TFLite, check parity, write models/"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name != chosen:
            continue  # only the chosen command's module is imported: training ones need torch, evaluate must not
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as exc:
            print(f"error: python -m export {name} needs {exc.name or exc}: install the training extras with `make train-setup`",
                  file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
