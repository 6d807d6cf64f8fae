"""ssl_bench: benchmark self-supervised pretext tasks by the few-label accuracy they give.

The pipeline is: pretrain a shared conv backbone on unlabeled images with a pretext task,
freeze its early stages (conv1, conv2), then fit conv3 + a linear classifier on K labelled
images per class and report top-1 accuracy on the full test set.
"""

__version__ = "0.1.0"
