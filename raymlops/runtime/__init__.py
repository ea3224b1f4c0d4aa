"""The Ray every stage runs on: ``session`` starts an embedded local Ray or connects to an address (the
only module that calls ``ray.init``), ``reaper`` stops what an embedded Ray leaves when its driver is
killed."""
