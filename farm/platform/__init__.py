"""What this machine is and can do (host CPU, toolchains, child processes): facts every later
stage (compile, transports, run) needs, imported by them and importing none of them."""
