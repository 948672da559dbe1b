"""The ``mcpruner`` command line: demo | prune | compile | tune | bench | tracker | server."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from pathlib import Path

__all__ = ["main"]


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: use e.g. 1,3,224,224") from None
    if len(dims) != 4 or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: four positive dimensions N,C,H,W, e.g. 1,3,224,224")
    return dims


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 0")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from .models import model_names

    p.add_argument("--model", default="resnet18",
                   help=f"one of {', '.join(model_names())} (prune: also a .pt from mcp.save_pruned)")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--num-classes", type=_positive_int, default=1000)
    p.add_argument("--input-shape", type=_shape, default=(1, 3, 224, 224), help="N,C,H,W")
    p.add_argument("--seed", type=int, default=0)


def _add_prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="host", help="target preset (vector width to align to)")
    p.add_argument("--pattern-k", type=int, default=4, help="taps kept per 3x3 kernel")
    p.add_argument("--keep-kernels", type=float, default=0.5, help="share of kernels kept")


def _shape_kwargs(args: argparse.Namespace) -> dict[str, int]:
    """A built-in model's constructor arguments from --num-classes and --input-shape."""
    return {"num_classes": args.num_classes, "in_channels": args.input_shape[1]}


def _builtin_model(args: argparse.Namespace, kwargs: dict[str, int]):
    """``(model, kwargs)``: the built-in ``--model`` (seeded, ``--width`` added to ``kwargs``)."""
    import torch

    from .models import get_model

    _refuse_path_as_model(args.model)
    torch.manual_seed(args.seed)
    if args.width != 1.0:
        kwargs = {**kwargs, "width": args.width}
    return get_model(args.model, **kwargs), kwargs


def _refuse_path_as_model(name: str) -> None:
    """``--model`` names a built-in model; a file there is a mix-up with ``--onnx`` / ``--weights``."""
    if name.endswith(".onnx"):
        raise ValueError(f"--model takes a built-in model name; for the ONNX file {name} use --onnx {name}")
    if name.endswith((".pt", ".pth", ".safetensors")):
        raise ValueError(f"--model takes a built-in model name here; for the saved model {name} use --weights "
                         f"{name} (written by 'mcpruner prune --out' or mcp.save_pruned)")
    if "/" in name or Path(name).exists():
        raise ValueError(f"--model takes a built-in model name, not a path ({name}): give an ONNX file with "
                         "--onnx, a pruned torch model with --weights")


def _build_model(args: argparse.Namespace):
    return _builtin_model(args, _shape_kwargs(args))[0].eval()


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(size=args.size, batch=args.batch, threads=args.threads, repeat=args.repeat,
             seed=args.seed, target=args.target, json_path=args.json)
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    import torch

    from .pruning import prune, save_pruned

    if args.data is None:
        if args.schedule != "oneshot" or args.epochs:
            raise ValueError(f"--schedule {args.schedule} / --epochs train the model: give --data")
        # the file names its model, so load_pruned and `compile --weights` rebuild it
        model, meta = _load_or_build(args, _shape_kwargs(args))
        model.eval()
        x = torch.randn(*args.input_shape)
        pruned, report = prune(model, target=args.target, pattern_k=args.pattern_k, keep_kernels=args.keep_kernels,
                               ratio=args.ratio, min_layer_keep=args.min_layer_keep, example_input=x)
        print(report)
    else:
        pruned, report, meta = _prune_on_data(args)
    if args.out:
        save_pruned(pruned, args.out, meta={**meta, "report": report.to_dict()})
        print(f"saved the pruned model (weight_orig + weight_mask, load with mcp.load_pruned) to {args.out}")
    return 0


def _load_or_build(args: argparse.Namespace, kwargs: dict[str, int]):
    """``--model``: a built-in name, or a .pt written by ``mcp.save_pruned`` (dense or pruned)."""
    from .pruning import load_pruned

    if args.model.endswith(".onnx"):
        raise ValueError("--model: ONNX files cannot be pruned here (pruning trains a torch model); "
                         "give a built-in name or a .pt written by mcp.save_pruned")
    if args.model.endswith((".pt", ".pth", ".safetensors")):
        model, meta = load_pruned(args.model)
        return model, {"model": meta.get("model"), "model_kwargs": meta.get("model_kwargs", {})}
    model, kwargs = _builtin_model(args, kwargs)
    return model, {"model": args.model, "model_kwargs": kwargs}


def _prune_on_data(args: argparse.Namespace):
    """Prune (and train, per --schedule/--epochs) on local data; print the report and top-1."""
    from .data import load_split
    from .pruning import TrainConfig, evaluate, prune

    train, test = load_split(args.data, "train"), load_split(args.data, "test")
    if args.train_subset:
        train = train.subset(args.train_subset, seed=args.seed)
    model, meta = _load_or_build(args, {"in_channels": train.input_shape[0], "num_classes": len(train.classes)})
    before = evaluate(model, test.loader(1000))
    config = TrainConfig(lr=args.lr, progress=True, checkpoint_dir=args.checkpoint_dir)
    pruned, report = prune(
        model, target=args.target, pattern_k=args.pattern_k, keep_kernels=args.keep_kernels, ratio=args.ratio,
        min_layer_keep=args.min_layer_keep, schedule=args.schedule, epochs=args.epochs,
        data=train.loader(args.batch_size, shuffle=True, augment=True, seed=args.seed), train_config=config,
        example_input=train.normalise(train.images[:1]),
    )
    after = evaluate(pruned, test.loader(1000))
    print(report)
    print(f"top-1 on {train.name} test ({len(test)} images): {before:.4f} before, {after:.4f} after "
          f"({args.schedule}, {args.epochs} epochs)")
    return pruned, report, {**meta, "top1_before": before, "top1_after": after, "schedule": args.schedule}


def _model_module(args: argparse.Namespace):
    """The Relax module that compile and tune work on: ONNX, saved weights, or a built-in pruned here."""
    import torch

    from .frontend import from_onnx, from_torch
    from .pruning import prune

    if args.onnx and args.weights:
        raise ValueError("give --onnx or --weights, not both: an ONNX file carries its own weights")
    if args.onnx:
        mod = from_onnx(args.onnx, {args.input_name: list(args.input_shape)} if args.input_name else None)
    else:
        if args.weights:
            model = _load_weights(args)
        else:
            model = _build_model(args)
            model, _ = prune(model, target=args.target, pattern_k=args.pattern_k,
                             keep_kernels=args.keep_kernels)
        mod = from_torch(model, (torch.randn(*args.input_shape),))
    return mod


def _cmd_compile(args: argparse.Namespace) -> int:
    from .compiler import compile as mcp_compile

    log = None if args.tuning_log == "none" else args.tuning_log
    if args.out:  # before the compile, not after it: the folder must be there to link into
        Path(args.out).resolve().parent.mkdir(parents=True, exist_ok=True)
    cm = mcp_compile(_model_module(args), target=args.target, tuning_log=log)
    print(cm.summary())
    if args.out:
        kwargs = {}
        cross = cm.preset.cross_compiler
        if cross:
            import tvm

            kwargs["fcompile"] = tvm.support.cc.cross_compiler(cross)
        cm.export_library(args.out, **kwargs)
        print(f"wrote {args.out}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from .tuning import check_tune_arguments, tune

    if args.tracker and not args.key:
        raise ValueError("--tracker needs --key (the key the board's RPC server registered with)")
    # Refused in seconds, before the model is pruned and lowered (which takes minutes).
    check_tune_arguments(args.target, trials=args.trials, tracker=args.tracker, key=args.key,
                         search=args.search, confirm_rounds=args.confirm_rounds)
    report = tune(_model_module(args), args.target, trials=args.trials, log_dir=args.log,
                  tracker=args.tracker, key=args.key, search=args.search, sparse_only=args.sparse_only,
                  emulated=args.emulated, confirm_rounds=args.confirm_rounds)
    print(report.summary())
    print(f"'mcpruner compile --target {args.target}' now applies {report.log_dir} "
          "(or pass --tuning-log to pick a folder)")
    return 0


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="pruned model saved by 'mcpruner prune --out' (or a pruned state_dict)")
    p.add_argument("--onnx", help="use this ONNX file instead of a built-in model")
    p.add_argument("--input-name", help="ONNX input to give --input-shape (for dynamic dims)")


def _load_weights(args: argparse.Namespace):
    """A file from ``mcpruner prune --out`` / ``mcp.save_pruned`` (rebuilt from its meta when it
    names its model), or a bare pruned state_dict (loaded into the --model built here)."""
    from .pruning import load_pruned_state_dict
    from .pruning.io import _model_from_meta, read_pruned

    path = Path(args.weights)
    try:
        state, meta = read_pruned(path)
    except ValueError as not_saved_pruned:
        state, meta = _plain_state_dict(path, not_saved_pruned), {}
    model = _model_from_meta(path, meta, state) if meta.get("model") else _build_model(args)
    try:  # re-creates the pruning reparametrization, then loads the saved masks + weights
        return load_pruned_state_dict(model, state).eval()
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"--weights {path} does not fit the model it is loaded into "
                         f"({type(model).__name__}): {str(exc).splitlines()[0][:300]}") from None


def _plain_state_dict(path: Path, not_saved_pruned: ValueError) -> dict:
    """``path`` read as a torch state_dict (tensors by name); a clear error for anything else."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds for a file that is not its format
        # torch's own text for a refused pickle advises weights_only=False, which would run
        # the file's code: that advice is not passed on.
        why = ("torch.load(weights_only=True) refused it" if isinstance(exc, pickle.UnpicklingError)
               else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}")
        raise ValueError(f"--weights {path} is neither a file written by 'mcpruner prune --out' / "
                         f"mcp.save_pruned nor a torch state_dict ({why})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights {path}: a torch file, but not a state_dict (tensors by name); "
                         f"{not_saved_pruned}")
    return state


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .benchmark import compare_frameworks
    from .pruning import prune

    model = _build_model(args)
    if args.plot:  # before the timing, not after it: minutes of work must not end in a missing folder
        Path(args.plot).resolve().parent.mkdir(parents=True, exist_ok=True)
    x = torch.randn(*args.input_shape)
    pruned, report = prune(model, target=args.target, pattern_k=args.pattern_k,
                           keep_kernels=args.keep_kernels, example_input=x)
    result = compare_frameworks(pruned, x, target=args.target, threads=args.threads,
                                repeat=args.repeat, model_name=args.model,
                                tvm_dense=not args.no_tvm_dense, per_layer=bool(args.plot), progress=print)
    result.facts["conv_mac_reduction"] = round(report.mac_reduction, 3)
    print(result.table())
    if args.plot:
        from .layer_bench import layer_table, plot_layers

        print(layer_table(result.layers))
        plot_layers(result, args.plot)
        print(f"wrote the per-layer plot to {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
    return 0


def _cmd_tracker(args: argparse.Namespace) -> int:
    """A TVM RPC tracker in the foreground; a real HiKey970 joins it with
    ``python -m tvm.exec.rpc_server --tracker HOST:9190 --key hikey970`` (``rpc_farm``)."""
    from . import rpc_farm

    try:
        tracker = rpc_farm.start_tracker(args.port, host=args.host)
    except rpc_farm.RPCFarmError as err:
        print(f"mcpruner tracker: error: {err}", file=sys.stderr)
        return 2
    print(f"TVM RPC tracker on {args.host}:{tracker.port} (log {tracker.log_path}); Ctrl-C stops it.\n"
          f"A board joins with:   {rpc_farm.board_join_command(f'HOST:{tracker.port}')}"
          "   (HOST: this machine's address on the board's network, BOARD: the board's)\n"
          f"A local stand-in:     mcpruner server --tracker {tracker.address} --key {rpc_farm.BOARD_KEY}"
          + ("" if args.host != "127.0.0.1" else
             "\n(listening on 127.0.0.1 only: for boards on a trusted network use --host <this machine's address "
             "there>; an RPC server runs whatever code it is sent)"),
          flush=True)
    return rpc_farm.run_in_foreground(tracker)


def _cmd_server(args: argparse.Namespace) -> int:
    """A TVM RPC server on 127.0.0.1 (host CPU, or aarch64 under qemu) joined to a tracker."""
    from . import rpc_farm
    from .arm_emulation import ArmEmulationError

    try:
        server = rpc_farm.start_server(args.tracker, args.key, port=args.port,
                                       emulate_aarch64=args.emulate_aarch64)
    except (rpc_farm.RPCFarmError, ArmEmulationError) as err:
        print(f"mcpruner server: error: {err}", file=sys.stderr)
        return 2
    print(f"serving: {server!r}; Ctrl-C stops it.", flush=True)
    if args.emulate_aarch64:
        hint = ("its key names an emulator, so `mcpruner tune` records the log as emulated by itself"
                if rpc_farm.key_names_emulator(args.key) else
                f"key {args.key!r} does not say so (keys with {' or '.join(map(repr, rpc_farm.EMULATED_KEY_MARKERS))} "
                "do): pass --emulated to `mcpruner tune`")
        print(f"Emulated timings are not device timings: {hint}; 'compile --tuning-log auto' skips "
              "logs with emulated provenance.", flush=True)
    return rpc_farm.run_in_foreground(server)


EXAMPLE_MARKER = "example:"


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's wrapping, except that the example epilog is printed as written: a wrapped
    command line could not be copied into a shell."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLE_MARKER):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _example(command: str) -> dict[str, object]:
    """``add_parser`` keywords for a ``--help`` that ends with one example command line."""
    return {"epilog": f"{EXAMPLE_MARKER}\n  {command}", "formatter_class": _HelpFormatter}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcpruner", description=__doc__, **_example("mcpruner demo --size 112"))
    parser.add_argument("-v", "--verbose", action="store_true", help="log each layer's decision")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="prune + compile + time a ResNet-18-style model vs torch/ORT/TVM",
                          **_example("mcpruner demo --size 112 --repeat 3 --json demo.json"))
    demo.add_argument("--size", type=int, default=224)
    demo.add_argument("--batch", type=int, default=1)
    demo.add_argument("--threads", type=int, default=None, help="default: the target's cores")
    demo.add_argument("--repeat", type=int, default=5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--target", default="host")
    demo.add_argument("--json", help="also write the result as JSON here")
    demo.set_defaults(func=_cmd_demo)

    p = sub.add_parser("prune", help="prune a model (and fine-tune it on local data) and print the report",
                       **_example("mcpruner prune --model vgg11_small --data fashion-mnist --ratio 8 "
                                  "--schedule admm --epochs 6 --out pruned.pt"))
    _add_model_args(p)
    _add_prune_args(p)
    p.add_argument("--ratio", type=float, help="conv-MAC reduction target (per-layer keeps by sensitivity)")
    p.add_argument("--min-layer-keep", type=float,
                   help="with --ratio: the smallest share of kernels any layer keeps (default 1/8)")
    p.add_argument("--data", help="'fashion-mnist' or a local CIFAR-10 / ImageFolder / idx directory: "
                   "sets input shape and classes, trains per --schedule and reports top-1")
    p.add_argument("--schedule", default="oneshot", choices=["oneshot", "iterative", "admm"])
    p.add_argument("--epochs", type=int, default=0, help="training epochs of the schedule (needs --data)")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=0, help="train on this many images (0: all)")
    p.add_argument("--checkpoint-dir",
                   help="save the training state here after every epoch; the same command run again "
                        "resumes where an interrupted run stopped")
    p.add_argument("--out", help="save the pruned model here (.pt; mcp.load_pruned reads it)")
    p.set_defaults(func=_cmd_prune)

    c = sub.add_parser("compile", help="compile a pruned model (built-in or .onnx) and export it",
                       **_example("mcpruner compile --weights pruned.pt --input-shape 1,1,28,28 --out model.so"))
    _add_model_args(c)
    _add_prune_args(c)
    _add_source_args(c)
    c.add_argument("--out", help="export the compiled library here (.so)")
    c.add_argument("--tuning-log", default="auto",
                   help="'auto' (the autotune_logs/ folder measured for this target), a log folder, or 'none'")
    c.set_defaults(func=_cmd_compile)

    tu = sub.add_parser("tune", help="tune a pruned model with MetaSchedule + XGBoost (locally or over a tracker)",
                        description="Measures schedules of every kernel of the compiled model and appends them "
                        "to a MetaSchedule log that 'mcpruner compile' applies. Re-running resumes.",
                        **_example("mcpruner tune --target hikey970-cpu --tracker 127.0.0.1:9190 --key hikey970 "
                                   "--trials 200"))
    _add_model_args(tu)
    _add_prune_args(tu)
    _add_source_args(tu)
    tu.add_argument("--trials", type=_positive_int, default=200,
                    help="distinct schedules to measure (counting what the log holds)")
    from tvm_mcpruner.tuning_log import CHOICE_MARGIN

    from .tuning import CONFIRM_CANDIDATES, CONFIRM_ROUNDS

    tu.add_argument("--confirm-rounds", type=_count, default=CONFIRM_ROUNDS,
                    help=f"after the search, measure each kernel's {CONFIRM_CANDIDATES} fastest schedules and its "
                    "default this many more times (compile applies the best median; the default unless beaten "
                    f"by {CHOICE_MARGIN * 100:.0f}%%)")
    tu.add_argument("--log", help="log folder (default ./autotune_logs/<device>, under the current folder)")
    tu.add_argument("--tracker", help="HOST:PORT of a TVM RPC tracker (default: measure on this machine)")
    tu.add_argument("--key", help="device key on the tracker (e.g. hikey970)")
    tu.add_argument("--search", choices=("xgb", "random"), default="xgb")
    tu.add_argument("--sparse-only", action="store_true", help="tune only our sparse kernels")
    tu.add_argument("--emulated", action=argparse.BooleanOptionalAction, default=None,
                    help="whether the RPC servers are emulated (qemu), recorded in the log's provenance.jsonl "
                    "('compile' skips emulated logs unless given by path); default: inferred from a key "
                    "containing 'qemu'/'emul', else unknown over RPC, --no-emulated locally")
    tu.set_defaults(func=_cmd_tune)

    b = sub.add_parser("bench", help="time a pruned built-in model side by side",
                       **_example("mcpruner bench --model vgg11 --width 0.25 --input-shape 1,3,32,32 "
                                  "--no-tvm-dense --plot layers.png"))
    _add_model_args(b)
    _add_prune_args(b)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("--no-tvm-dense", action="store_true", help="skip the (slow) untuned TVM build")
    b.add_argument("--json", help="write the result as JSON here")
    b.add_argument("--plot", help="also time each conv / linear layer alone (torch, onnxruntime, mcpruner) and "
                   "draw them as a per-layer bar chart with each layer's MAC reduction to this PNG")
    b.set_defaults(func=_cmd_bench)

    join = "a HiKey970 joins with `python -m tvm.exec.rpc_server --tracker HOST:9190 --key hikey970`"
    t = sub.add_parser("tracker", help=f"run a TVM RPC tracker for tuning (foreground); {join}",
                       description=f"Run a TVM RPC tracker until Ctrl-C; {join}.",
                       **_example("mcpruner tracker --port 9190"))
    t.add_argument("--port", type=int, default=9190)
    t.add_argument("--host", default="127.0.0.1", help="listen address (this machine's address on a trusted network, for boards there: an "
                        "RPC server runs whatever code it is sent)")
    t.set_defaults(func=_cmd_tracker)
    s = sub.add_parser("server", help="run a TVM RPC server on 127.0.0.1 joined to a tracker (foreground)",
                       description=f"A local stand-in for a board until Ctrl-C; a real board runs TVM's "
                       f"own server instead: {join}.",
                       **_example("mcpruner server --tracker 127.0.0.1:9190 --key local-cpu"))
    s.add_argument("--tracker", required=True, help="HOST:PORT of a tracker on this machine")
    s.add_argument("--key", required=True, help="device key the tuner asks for (e.g. hikey970)")
    s.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    s.add_argument("--emulate-aarch64", action="store_true",
                   help="aarch64 under qemu: emulated (qemu) — not device timing")
    s.set_defaults(func=_cmd_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, TypeError, ConnectionError) as err:
        print(f"mcpruner {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
