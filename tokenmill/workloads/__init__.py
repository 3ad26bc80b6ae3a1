"""Workloads: what requests arrive when, and how long they are.

* config      the Workload part of a Scenario (pydantic models)
* arrivals    open-loop arrival processes and time-varying rates
* lengths     prompt and output length distributions, caps and truncation
* empirical   length columns read from files, for empirical distributions
* classes     several request classes mixed in one workload
* traces      replay of real request logs (Azure, Mooncake, BurstGPT, native CSV)
* generate    a Workload and a seed -> WorkloadArrays (the columns the kernel reads)
* describe    a summary of a workload: rate, burstiness, lengths, prefix sharing, classes

This package imports nothing at load time, so that tokenmill.scenario can use its config
models without a cycle; import the submodules you need.
"""
