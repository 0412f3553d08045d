"""Kubernetes objects that the steps of a run create.

* :mod:`selflengthen.serving.cluster`: the model servers (vLLM Deployment + Service per server, ``serving.layout``);
* :mod:`selflengthen.cluster.trainjob`: the training jobs (Kubeflow Trainer TrainJob per role);
* :mod:`selflengthen.cluster.fetch`: the model server's init container (models from storage);
* :mod:`selflengthen.cluster.objects`: what they share (names, labels, owner references, pod
  security, credentials as Secret references, API errors, polling).
"""
