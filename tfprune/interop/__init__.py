"""Optional bridges to other pruning libraries; import the submodules explicitly."""
