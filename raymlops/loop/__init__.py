"""The closed loop: the controller that canaries, watches and retrains (``controller``), the decisions it
takes from evidence (``policy``, pure), the data a retrain learns from (``retraining``, pure), the lease
that keeps one controller per service (``lease``) and replaying labelled rows through a service
(``replay``)."""
