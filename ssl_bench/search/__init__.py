"""Architecture search (DARTS, Liu et al. 2019) driven by a pretext task instead of labels.

- `ops`: the candidate operations of an edge and the softmax(α)-mixed operation;
- `model`: mixed-op cells, the search network, and the network of a genotype
  (`SearchedBackbone`, a drop-in `ConvBackbone`; `conf/backbone/searched.yaml`);
- `architect`: the first- and second-order α update;
- `genotype`: deriving the discrete cells, their content-addressed file;
- `search`: the loop over two halves of the unlabeled images, α log and plot;
- `compare`: the benchmark entry (searched vs hand-designed at the same budget);
- `cli`: `ssl-bench-search`.
"""
