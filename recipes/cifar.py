r"""PruneTrain on CIFAR-style networks with the paper's CIFAR settings.

Defaults: ResNet-32 (16/32/64), 182 epochs, batch 128, SGD momentum 0.9,
learning rate 0.1 × 0.1 at epochs 91 and 136, weight decay 5e-4, penalty
ratio 0.2, a reconfiguration every 10 epochs (the paper's mode:
`Reconfigure(DeadChannels(interval=10))`; --flops_target switches to
`FlopsBudget`), widths in multiples of 8 (--round_to=1: any count), pad-4
random crop + flip on CIFAR. The data default is MNIST-5k (real, installs with the package); point
--data=cifar10 --data_dir at the extracted "python version" batches for the
paper's experiment.

    python -m recipes.cifar --data=cifar10 --data_dir=$HOME/data/cifar-10-batches-py
    python -m recipes.cifar --data=cifar10 --data_dir=... --noprunetrain   # dense
    python -m recipes.cifar --model=resnet20 --epochs=30 --lr_decay_epochs=15,25 \
        --interval=5 --log_dir=runs/mnist                                  # MNIST-5k
    python -m recipes.cifar --model=vgg16 --data=cifar100 --data_dir=...

Models: resnet20/32/56 (basic blocks), resnet50_cifar (bottleneck, 3 stages
× 8 blocks), vgg11/13/16 with BatchNorm. See --helpfull for every flag.
"""

from absl import app

from recipes import common

DEFAULTS = common.Config()


if __name__ == "__main__":
    common.define_flags(DEFAULTS)
    app.run(common.main)
