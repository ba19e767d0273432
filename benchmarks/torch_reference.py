"""A plain PyTorch Barlow Twins step: the reference keras_barlow is compared with.

The step of the paper's code on ready views held on the device: torchvision
ResNet-50 without `fc` (zero-initialized last BN of each block, as keras_barlow's
backbones), the projector `Linear(bias=False) + BatchNorm1d + ReLU` x2 +
`Linear(bias=False)`, the Barlow Twins loss in float32 (BatchNorm1d without
affine, lambda 0.0051), SGD (0.01, momentum 0.9, fused on CUDA), bfloat16
autocast and channels_last, as a PyTorch user would write it. Timed eager and
with `torch.compile`, in interleaved rounds after an untimed warm-up: the
compile time is reported apart (`first_s` of `compiled` minus that of `eager`).

One `torch_reference` line with both variants' step times, spread and image
pairs/s; before it, a `torch_reference_provisional` line per variant once it is
compiled and calibrated, so that a compilation that fails or overruns still
leaves the eager figure. Needs torch and, except for `--smoke`
without it, torchvision.

Usage:

    python benchmarks/torch_reference.py                     # ResNet-50, 224 px, 256
    python benchmarks/torch_reference.py --smoke             # tiny, any device
"""

import sys

import harness

LAMBD = 0.0051
SMOKE = {
    "backbone": "resnet18",
    "batch_size": 4,
    "image_size": 32,
    "projector": [32, 32],
    "rounds": 1,
    "round_s": 0.1,
}


def make_flags(argv=None):
    parser = harness.parser(__doc__)
    parser.add_argument("--backbone", default="resnet50", help="a torchvision model")
    parser.add_argument("--batch_size", type=int, default=256, help="image pairs")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--projector", type=int, nargs="+", default=[8192] * 3)
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=("eager", "compiled"),
        default=["eager", "compiled"],
    )
    return harness.parse(parser, argv, SMOKE)


def backbone(name):
    """`(network, features)`: a torchvision ResNet without `fc`, or without
    torchvision (smoke runs only) a small convnet."""
    from torch import nn

    try:
        import torchvision
    except ImportError:
        network = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        return network, 16, "convnet (no torchvision)"
    network = getattr(torchvision.models, name)(zero_init_residual=True)
    features = network.fc.in_features
    network.fc = nn.Identity()
    return network, features, f"torchvision {name}"


def projector(features, units):
    from torch import nn

    layers, width = [], features
    for size in units[:-1]:
        layers += [nn.Linear(width, size, bias=False), nn.BatchNorm1d(size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, units[-1], bias=False))
    return nn.Sequential(*layers)


def make_step(network, normalize, optimizer, device, compile_it):
    """`step(x1, x2) -> loss`: forward in bf16 autocast, loss in float32, update."""
    import torch

    def loss_of(z1, z2):
        z1, z2 = normalize(z1.float()), normalize(z2.float())
        c = z1.T @ z2 / z1.shape[0]
        diagonal = torch.diagonal(c)
        on_diag = (diagonal - 1).pow(2).sum()
        off_diag = c.pow(2).sum() - diagonal.pow(2).sum()
        return on_diag + LAMBD * off_diag

    if compile_it:
        network, loss_of = torch.compile(network), torch.compile(loss_of)

    def step(x1, x2):
        with torch.autocast(device, dtype=torch.bfloat16):
            z1, z2 = network(x1), network(x2)
        loss = loss_of(z1, z2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def main(argv=None):
    flags = make_flags(argv)
    recorder = harness.start(flags, "torch_reference", framework="torch")
    import torch
    from torch import nn

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")  # TF32, as JAX's default on GPUs
    encoder, features, backbone_name = backbone(flags.backbone)
    network = nn.Sequential(encoder, projector(features, flags.projector))
    network = network.to(device, memory_format=torch.channels_last)
    normalize = nn.BatchNorm1d(flags.projector[-1], affine=False).to(device)
    optimizer = torch.optim.SGD(
        network.parameters(), lr=0.01, momentum=0.9, **({"fused": True} if cuda else {})
    )
    shape = (flags.batch_size, 3, flags.image_size, flags.image_size)
    views = [
        torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
        for _ in range(2)
    ]
    settings = {
        "backbone": backbone_name,
        "batch_size": flags.batch_size,
        "image_size": flags.image_size,
        "projector": flags.projector,
        "autocast": "bfloat16",
        "channels_last": True,
        "optimizer": f"SGD(0.01, momentum 0.9{', fused' if cuda else ''})",
    }

    def runs_of(step):
        return lambda steps: [step(*views) for _ in range(steps)][-1]

    def provisional(variant, result):
        recorder.emit(
            "torch_reference_provisional",
            variant=variant,
            **settings,
            **result,
            per_s=flags.batch_size / result["calibration_step_s"],
        )

    runs = {
        variant: runs_of(
            make_step(network, normalize, optimizer, device, variant == "compiled")
        )
        for variant in flags.variants
    }
    results = harness.timing_records(
        harness.time_rounds(
            runs, flags.rounds, flags.round_s, warmup_steps=3, on_warm=provisional
        ),
        flags.batch_size,
    )
    compile_s = None
    if len(results) == 2:
        compile_s = results["compiled"]["first_s"] - results["eager"]["first_s"]
    recorder.emit("torch_reference", **settings, results=results, compile_s=compile_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
