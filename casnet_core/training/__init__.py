"""The rooms of ``casnet train`` (its command, documentation and public names: ``casnet_core.train``).

* ``setup``: this process's device, the training set and the validation samples, ``TrainingError``;
* ``schedule``: the data order (which images each process trains on at each step) and the loader's view of it;
* ``run``: ``TrainingRun``, the state of one process built from the config (it imports none of the others);
* ``loop``: starting or resuming a run, and its step loop;
* ``checkpointing``: last.pt written and read back (resume), ``--init``'s weights, the output folder's run files;
* ``validation``: PQ and mIoU during training, best.pt;
* ``run_log``: log.jsonl and TensorBoard;
* ``fake_quant``: quantization-aware fine-tuning (``solver.fake_quant``), the convolutions run through int8 rounding.
"""
