"""`squeezer bench`: the speed-up ladder measured on this machine, each rung a real server process under the same
load, its answers checked against the out-of-the-box deployment's (see `ladder`)."""
