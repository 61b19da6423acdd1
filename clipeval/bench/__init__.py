"""``python -m clipeval.bench`` (or ``nox -s bench``): how fast the hot paths are on this machine.

A benchmark, not a test: it prints measurements and never fails because a machine is slow.
Models are randomly initialised open_clip architectures saved to a temporary checkpoint
(throughput does not depend on the weights), images are generated JPEGs in the image-folder
layout, so everything runs offline. Sections:

- throughput: the image tower's bare forward (the ceiling) against end-to-end feature
  extraction; the text tower on the full 77-token context against the trimmed one;
- suite: image-encoding passes of a whole suite against the number of datasets it reads;
- prompts: prompts the text tower encodes for the ImageNet family (80 templates, a generated
  layout): ``suite=natural_shifts`` in one run, the six tasks one run each on one cache, and
  the headline ``task=imagenet_r`` with ``--arch`` cold and warm, in seconds (``--no-headline``
  skips it);
- memory: peak resident memory of feature extraction at two dataset sizes;
- peer: CLIP_benchmark side by side on the same checkpoint file and image folder, when a
  Python with ``clip_benchmark`` installed is given (``--peer-python``).
"""
