"""The reference code's run-script command lines (its flags and values, with our paths) parse with
our scripts' own parsers and mean the same, so a renamed flag can never slip in again. Nothing is
run: each script's parse function is imported and given the line."""
import os
import shlex

import pytest

CKPT = "./imagenet_files/best_ResNet18ClassifyAfterLayer4_1_100.pth"

# run_imagenet_experiment.sh of the reference (IMAGE_DIR, BASE_INIT_CKPT, LABEL_ORDER_DIR filled in).
IMAGENET_EXPERIMENT = (
    "--images_dir data/imagenet --max_buffer_size 959665 --num_classes 1000 --streaming_min_class 100 "
    "--streaming_max_class 1000 --base_init_classes 100 --class_increment 100 "
    f"--classifier ResNet18_StartAt_Layer4_1 --classifier_ckpt {CKPT} --rehearsal_samples 50 "
    "--start_lr 0.1 --end_lr 0.001 --lr_step_size 100 --lr_mode step_lr_per_class --weight_decay 1e-5 "
    "--use_random_resized_crops --use_mixup --mixup_alpha .1 --label_dir ./imagenet_files/ "
    "--num_codebooks 32 --codebook_size 256 --expt_name remind_imagenet")
# train_base_init_network.sh of the reference (IMAGENET_DIR, MODEL, BASE_MAX_CLASS filled in).
TRAIN_BASE_INIT = ("--arch ResNet18ClassifyAfterLayer4_1 --data data/imagenet --base_max_class 100 "
                   "--labels_dir ./imagenet_files/ --ckpt_file ResNet18ClassifyAfterLayer4_1_100.pth")
# The pytorch/examples flags the reference's trainer also takes, in both spellings.
PYTORCH_EXAMPLES_LONG = ("--workers 4 --epochs 30 --start-epoch 2 --batch_size 128 --learning-rate 0.05 "
                         "--momentum 0.8 --weight-decay 5e-4 --print-freq 20 --resume runs/last.pth "
                         "--evaluate --world-size 1 --rank 0 --dist-url tcp://10.0.0.1:23456 "
                         "--dist-backend gloo --seed 7 --gpu 1 --multiprocessing-distributed")
PYTORCH_EXAMPLES_SHORT = "-a ResNet18ClassifyAfterLayer4_1 -j 4 -b 128 --lr 0.05 --wd 5e-4 -p 20 -e"
LABEL_MAKER = ("--data data/imagenet --labels_dir ./imagenet_files/ "
               "--class_order_text_file ./imagenet_files/imagenet_class_order.txt")
# vqa_experiments/run_{tdiuc,clevr}_experiment.sh of the reference, and its trainer's other flags.
VQA_TDIUC = ("--config_name TDIUC_streaming --expt_name TDIUC_streaming_qtype_2e-3 --stream_with_rehearsal "
             "--data_order qtype --lr 2e-3")
VQA_CLEVR = ("--config_name CLEVR_streaming --expt_name CLEVR_streaming_iid_3e-4 --stream_with_rehearsal "
             "--data_order iid --lr 3e-4")


def split(line, *extra):
    return shlex.split(line) + list(extra)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run from an empty folder holding the reference's checkpoint path (the scripts check it exists)."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("imagenet_files")
    open(CKPT, "wb").close()
    return tmp_path


def latent_crops(args):
    """Whether the streaming flags turn the latent random resized crops on (either dest name)."""
    return bool(getattr(args, "random_resized_crops", False) or getattr(args, "use_random_resized_crops", False))


def test_reference_imagenet_experiment_line(in_tmp):
    from image_classification_experiments import imagenet_experiment

    args = imagenet_experiment.parse_args(split(IMAGENET_EXPERIMENT))
    assert latent_crops(args)  # the reference's --use_random_resized_crops: latent crops on
    assert args.images_dir == "data/imagenet" and args.classifier_ckpt == CKPT
    assert (args.max_buffer_size, args.num_classes, args.streaming_min_class, args.streaming_max_class,
            args.base_init_classes, args.class_increment) == (959665, 1000, 100, 1000, 100, 100)
    assert args.classifier == "ResNet18_StartAt_Layer4_1" and args.rehearsal_samples == 50
    assert (args.start_lr, args.end_lr, args.lr_step_size, args.lr_mode) == (0.1, 0.001, 100, "step_lr_per_class")
    assert args.weight_decay == 1e-5 and args.use_mixup and args.mixup_alpha == 0.1
    assert args.label_dir == "./imagenet_files/" and (args.num_codebooks, args.codebook_size) == (32, 256)
    assert args.expt_name == "remind_imagenet"


def test_reference_train_base_init_line():
    from image_classification_experiments.train_base_init_network_from_scratch import parse_args

    args = parse_args(split(TRAIN_BASE_INIT))
    assert args.arch == "ResNet18ClassifyAfterLayer4_1" and args.data == "data/imagenet"
    assert args.base_max_class == 100 and args.labels_dir == "./imagenet_files/"
    assert args.ckpt_file == "ResNet18ClassifyAfterLayer4_1_100.pth"
    # The reference's defaults for what the line leaves out.
    assert (args.epochs, args.start_epoch, args.batch_size, args.lr, args.momentum, args.weight_decay) == \
        (40, 0, 256, 0.1, 0.9, 1e-4)
    assert args.num_classes == 1000 and args.save_dir == "resnet_imagenet_ckpts" and args.seed == 0
    assert (args.world_size, args.rank, args.dist_backend) == (-1, -1, "nccl")
    assert args.dist_url.startswith("tcp://") and not args.multiprocessing_distributed and not args.evaluate


@pytest.mark.parametrize("line", [PYTORCH_EXAMPLES_LONG, PYTORCH_EXAMPLES_SHORT])
def test_pytorch_examples_flags_in_both_spellings(line):
    from image_classification_experiments.train_base_init_network_from_scratch import parse_args

    args = parse_args(split(line, "--data", "data/imagenet"))
    assert (args.num_workers, args.batch_size, args.lr, args.weight_decay, args.print_freq) == \
        (4, 128, 0.05, 5e-4, 20)
    assert args.evaluate and args.arch == "ResNet18ClassifyAfterLayer4_1"
    if line is PYTORCH_EXAMPLES_LONG:
        assert (args.epochs, args.start_epoch, args.momentum, args.resume, args.seed) == \
            (30, 2, 0.8, "runs/last.pth", 7)
        assert (args.world_size, args.rank, args.dist_url, args.dist_backend) == \
            (1, 0, "tcp://10.0.0.1:23456", "gloo")
        assert args.device == "cuda:1" and args.multiprocessing_distributed  # --gpu 1: train on cuda:1


def test_reference_label_maker_line():
    from image_classification_experiments.make_numpy_imagenet_label_files import parse_args

    args = parse_args(split(LABEL_MAKER))
    assert args.data == "data/imagenet" and args.labels_dir == "./imagenet_files/"
    assert args.class_order_text_file == "./imagenet_files/imagenet_class_order.txt"


@pytest.mark.parametrize("line, order, lr, config", [(VQA_TDIUC, "qtype", 2e-3, "tdiuc_streaming.json"),
                                                     (VQA_CLEVR, "iid", 3e-4, "clevr_streaming.json")])
def test_reference_vqa_lines(in_tmp, line, order, lr, config):
    from vqa_experiments.training.config import resolve_config_path
    from vqa_experiments.vqa_trainer import build_parser, check_args

    args = build_parser().parse_args(split(line))
    check_args(args)
    assert args.mode == "remind" and args.data_order == order and args.lr == lr  # REMIND
    assert os.path.basename(resolve_config_path(args.config)) == config  # the reference's config name
    assert args.expt_name == shlex.split(line)[3]
    assert args.save_dir == os.path.join("snapshots", args.expt_name)  # the reference's run folder


@pytest.mark.parametrize("flags, mode", [("--stream", "finetune"), ("--full", "full"),
                                         ("--stream_with_rehearsal", "remind")])
def test_vqa_trainer_mode_flags(in_tmp, flags, mode):
    from vqa_experiments.vqa_trainer import build_parser, check_args

    args = build_parser().parse_args(split(f"--config_name TDIUC_streaming --expt_name x --data_order iid {flags}"))
    check_args(args)
    assert args.mode == mode


def test_vqa_trainer_buffer_flags(in_tmp):
    from vqa_experiments.vqa_trainer import build_parser, check_args

    args = build_parser().parse_args(split(
        "--config_name TDIUC_streaming --expt_name x --data_order iid --stream_with_rehearsal --rehearsal_mode "
        "limited_buffer --max_buffer_size 10000 --buffer_replacement_strategy queue --lr 1e-3 "
        "--use_exponential_averaging"))
    check_args(args)
    assert args.rehearsal_mode == "limited_buffer" and args.max_buffer_size == 10000
    assert args.buffer_replacement_strategy == "queue" and args.use_exponential_averaging and args.lr == 1e-3
