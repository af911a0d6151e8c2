r"""PruneTrain on ResNet-50 with the paper's ImageNet settings.

Defaults: keras.applications ResNet-50 at 224×224, 90 epochs, batch 64 per
replica with learning rate 0.025 per replica (4 GPUs: 256 / 0.1), × 0.1 at
epochs 41, 61 and 81, SGD momentum 0.9, weight decay 1e-4, penalty ratio
0.2, a reconfiguration every 5 epochs (`DeadChannels(interval=5)`; with
--flops_target, `FlopsBudget`), widths in multiples of 8 (--round_to, as
tensor cores want); random-resized-crop + flip.

    python -m recipes.imagenet --data_dir=/data/imagenet --strategy=mirrored \
        --mixed_precision --log_dir=runs/r50
    python -m recipes.imagenet --data=synthetic --epochs=2 --steps_per_epoch=50 --eval_steps=5  # throughput

--data_dir holds TFRecords in the standard layout (train-00000-of-01024,
validation-00000-of-00128 with image/encoded and image/class/label), a TFDS
imagenet2012 directory, or class folders train/<class>/*.JPEG and
validation/<class>/*.JPEG. See --helpfull for every flag.
"""

from absl import app

from recipes import common

DEFAULTS = common.Config(
    model="resnet50", data="imagenet", epochs=90, batch_size=64,
    learning_rate=0.025, lr_decay_epochs=(41, 61, 81), weight_decay=1e-4,
    interval=5, image_size=224)


if __name__ == "__main__":
    common.define_flags(DEFAULTS)
    app.run(common.main)
