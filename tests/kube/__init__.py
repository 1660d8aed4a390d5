"""Tests of the Kubernetes executor's building blocks, and the fake apiserver they run against."""
