"""Frozen ResNet feature maps of every CLEVR/TDIUC image, written to features_<dataset>.h5.

Defaults are the reference's: CLEVR ResNet-101 up to layer3 (14x14x1024), TDIUC ResNet-152 up to
layer4 (7x7x2048), 224x224 bicubic. For small demos pick e.g. ``--arch resnet18 --layer layer4
--image_size 128`` (4x4x512). Format: vqa_experiments/DATA_FORMATS.md section 5.
"""
import argparse

from remind.runtime import add_run_arguments, resolve_device, run_cli, set_cpu_threads
from vqa_experiments.preprocess.features import ARCHS, IMAGENET_MEAN, LAYERS, extract_features
from vqa_experiments.vqa_data import DATASETS, dataset_files

PROGRESS = {"auto": None, "on": True, "off": False}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--data_root", required=True,
                        help="raw dataset folder (CLEVR_v1.0 with images/, or TDIUC with Images/)")
    parser.add_argument("--out_dir", default=None, help="default: --data_root")
    parser.add_argument("--output", default=None, help="default: OUT_DIR/features_<dataset>.h5")
    parser.add_argument("--arch", default=None, choices=ARCHS,
                        help="torchvision ResNet (default: resnet101 CLEVR, resnet152 TDIUC)")
    parser.add_argument("--layer", default=None, choices=LAYERS,
                        help="last ResNet stage kept (default: layer3 CLEVR, layer4 TDIUC)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--weights", default="imagenet",
                        help="'imagenet' (torchvision IMAGENET1K_V1, downloaded on first use), "
                             "'none' (seeded random init, for tests) or a state_dict file")
    parser.add_argument("--mean", type=float, nargs=3, default=list(IMAGENET_MEAN))
    parser.add_argument("--std", type=float, nargs=3, default=None,
                        help="default: ImageNet std; TDIUC keeps the reference's 0.224 for blue")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="init seed for --weights none")
    add_run_arguments(parser, seed=False)  # --device, --num_threads, --progress / --no_progress
    args = parser.parse_args(argv)
    set_cpu_threads(args.num_threads)
    output = args.output or dataset_files(args.out_dir or args.data_root, args.dataset)["features"]
    n, h, w, c = extract_features(
        args.dataset, args.data_root, output, args.arch, args.layer, args.image_size,
        args.weights, args.mean, args.std, args.batch_size, args.num_workers,
        resolve_device(args.device),
        args.seed, progress=PROGRESS[args.progress])
    print(f"{args.dataset}: wrote features of {n} images ({h}x{w}x{c}) to {output}")


if __name__ == "__main__":
    run_cli(main)
