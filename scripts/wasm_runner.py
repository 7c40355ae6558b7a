#!/usr/bin/env python3
"""Cargo runner for wasm32-wasip1 test binaries: runs them in wasmtime (PyPI `wasmtime`).

Set as CARGO_TARGET_WASM32_WASIP1_RUNNER by `make test-wasm32`, so the core's unit tests run
compiled for the same 32-bit target the filter runs on.
"""
import sys

import wasmtime


def main():
    path, args = sys.argv[1], sys.argv[2:]
    cfg = wasmtime.Config()
    engine = wasmtime.Engine(cfg)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    module = wasmtime.Module.from_file(engine, path)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [path] + args
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    wasi.inherit_env()
    store = wasmtime.Store(engine)
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    try:
        start(store)
    except wasmtime.ExitTrap as e:
        sys.exit(e.code)
    sys.exit(0)


if __name__ == "__main__":
    main()
