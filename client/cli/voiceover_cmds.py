"""``voiceover``: voice a subtitle file or a timecoded script to picture (client/voiceover/ does the work).

    unimoe-audio voiceover film.srt --voice narrator -o dialogue.wav
    unimoe-audio voiceover film.ass --voice-map ALICE=alice,BOB=bob --voice narrator -o dub.otio
    unimoe-audio voiceover film.srt --voice narrator -o dialogue.wav --only 12,15-18
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from .output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CLIError, emit_json, note, warn_if_tiny_daemon
from .parser import add_verb
from .runner import bars, client_for, settings_for, timeline_options


def options_from_args(args: argparse.Namespace) -> Any:
    from ..voiceover import VoiceoverOptions, parse_voice_map

    spot = timeline_options(args)
    sampling = {k: getattr(args, k) for k in ("cfg_scale", "temperature", "top_p", "top_k")
                if getattr(args, k, None) is not None}
    return VoiceoverOptions(
        voice=args.voice, ref_audio=args.ref_audio, ref_text=args.ref_text,
        voice_map=parse_voice_map(args.voice_map), max_stretch=args.max_stretch, overflow=args.overflow,
        sample_rate=args.sample_rate or 48000, channels=args.channels or 1, bit_depth=args.bit_depth or 24,
        loudness=args.loudness, record_in=spot.get("record_in"), fps=args.fps, seed=args.seed, sampling=sampling,
        priority=args.priority, tag=args.tag,
        spot_notes={k: spot[k] for k in ("project", "scene", "take", "note") if k in spot})


def cmd_voiceover(args: argparse.Namespace) -> int:
    from ..voiceover import ScriptError, Voiceover, VoiceoverError, parse_only, read_script

    for flag, given in (("--frames", args.frames), ("--no-wait", args.no_wait)):
        if given:
            raise CLIError(f"voiceover: {flag} does not apply (each cue's length comes from its slot; the stem "
                           "needs every cue)", EXIT_BAD_INPUT)
    out = Path(args.output).expanduser()
    timeline = None
    if out.suffix.lower() != ".wav":
        try:  # integrations/ is imported by name, only for a timeline output
            timeline = importlib.import_module("unimoe_audio.integrations.voiceover_timeline")
        except ImportError as exc:
            raise CLIError(f"voiceover: -o {args.output!r}: writing a timeline needs the integrations: {exc}",
                           EXIT_BAD_INPUT) from None
        if out.suffix.lower() not in timeline.SUFFIXES:
            raise CLIError(f"voiceover: -o {args.output!r}: wanted a .wav stem, or a timeline "
                           f"({' '.join(timeline.SUFFIXES)})", EXIT_BAD_INPUT)
    try:
        script = read_script(args.subs, fps=args.fps, format=args.format)
        opts = options_from_args(args)
        opts.check()
        known = {c.index for c in script.cues}
        only = parse_only(args.only, known | {int(s["index"]) for s in script.skipped})
        if only is not None and only - known:
            raise VoiceoverError(f"--only: cue {', '.join(map(str, sorted(only - known)))} is empty (skipped)")
    except (ScriptError, VoiceoverError, ValueError) as exc:
        raise CLIError(f"voiceover: {exc}", EXIT_BAD_INPUT) from None
    if not (opts.voice or opts.ref_audio or opts.voice_map or any(c.speaker or c.style for c in script.cues)):
        raise CLIError("voiceover: give --voice NAME, or --ref-audio FILE with --ref-text TEXT", EXIT_BAD_INPUT)
    settings = settings_for(args)
    client = client_for(args, settings)
    from .. import client as client_mod

    def note_line(text: str) -> None:
        note(args, text)

    with bars(args) as jb:
        def on_update(index: int, fraction: float, stage: str) -> None:
            if jb.enabled:
                jb.update(f"cue-{index}", fraction, stage)
            if stage in ("done", "failed", "cancelled") and not (args.quiet or args.json):
                jb.log(f"unimoe-audio: cue {index}: {stage}")
            if vo.report is not None:
                jb.update("all", vo.progress(), f"{sum(c.state == 'done' for c in vo.report.cues)}/"
                          f"{len(vo.report.cues)} cues done")

        vo = Voiceover(client, script, opts, out, only=only, on_update=on_update, on_note=note_line,
                       reconnect=lambda: client_for(args, settings))
        try:
            rep = vo.plan()
            if args.dry_run:
                emit_json(rep.model_dump(mode="json")) if args.json else _print_plan(rep)
                return EXIT_OK
            n = len(vo.to_render())
            jb.add("all", "voiceover" if n == len(rep.cues) else f"voiceover ({n} of {len(rep.cues)} cues)")
            warn_if_tiny_daemon(args, client)
            vo.submit()
        except VoiceoverError as exc:
            raise CLIError(f"voiceover: {exc}", EXIT_BAD_INPUT) from None
        except client_mod.ClientError as exc:
            from .output import map_error

            raise map_error(exc) from None
        interrupted = False
        try:
            while vo.poll(0.25):
                pass
        except KeyboardInterrupt:
            interrupted = True
            note(args, "interrupted: cancelling the remaining cues; the finished ones go into the stem")
            vo.cancel()
        except client_mod.ClientError as exc:
            from .output import map_error

            vo.cancel()
            vo.finish()
            raise map_error(exc) from None
        rep = vo.finish()
        written = [rep.output]
        if timeline is not None:
            try:
                written.insert(0, str(timeline.write_timeline(rep, out, fps=args.fps)))
            except (ImportError, ValueError, OSError) as exc:
                raise CLIError(f"voiceover: the stem, cues and report are written ({rep.output}), the timeline "
                               f"{out} is not: {exc}", EXIT_BAD_INPUT) from None
    failed = [c.index for c in rep.cues if c.state == "failed"]
    if args.json:
        emit_json({**rep.model_dump(mode="json"), "written": written, "report": str(vo.paths["report"])})
    else:
        _print_summary(rep, written, vo.paths)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK


def _print_plan(rep: Any) -> None:
    for c in rep.cues:
        end = "open" if c.end is None else f"{c.end:.3f}"
        print(f"cue {c.index:>4}  {c.start:9.3f} -> {end:>9}  {c.voice or 'reference':<14} "
              f"~{c.estimate_seconds:.2f} s (max {c.asked.get('max_seconds', 0):.2f})  {c.state:<8} {c.text[:50]}")


def _print_summary(rep: Any, written: list[str], paths: dict[str, Path]) -> None:
    done = [c for c in rep.cues if c.state == "done"]
    stretched = [c for c in done if c.stretch > 1.0]
    print(f"{written[0]}  ({rep.length_seconds:.3f} s, {rep.sample_rate} Hz, {rep.channels} ch, {rep.bit_depth}-bit; "
          f"{len(done)}/{len(rep.cues)} cues, {len(stretched)} stretched, {len(rep.overflows)} over their slot)")
    for extra in written[1:]:
        print(extra)
    print(f"cues: {paths['cues']}  report: {paths['report']}  spoken: {paths['srt']}")
    for c in rep.cues:
        if c.state != "done":
            print(f"cue {c.index}: {c.state}" + (f": {c.error}" if c.error else ""), file=sys.stderr)
        elif c.overflow_seconds > 0:
            print(f"cue {c.index}: {c.overflow_seconds:.3f} s over its {c.slot_seconds:.3f} s slot after x{c.stretch:.3f} "
                  f"({rep.overflow})", file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    from ..voiceover.fit import DEFAULT_MAX_STRETCH, OVERFLOW_MODES, STRETCH_LIMIT
    from .parser import add_gen_options

    p = add_verb(sub, "voiceover", help="voice a subtitle file or timecoded script into a spotted dialogue stem",
                       description="Speak every cue of an SRT, WebVTT, ASS/SSA file or a plain timecoded script at "
                       "its time: one stem as long as the last cue's end, one file per cue, a JSON report and the "
                       "spoken SRT/VTT (docs/cli.md, 'voiceover').")
    p.add_argument("subs", metavar="SUBS", help=".srt, .vtt, .ass/.ssa, or a plain script (START [--> END] [NAME:] text)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the stem (.wav), or a timeline with one clip per cue (.otio .edl .xml .fcpxml .aaf .mlt "
                   ".kdenlive) written beside OUT.wav")
    p.add_argument("--voice", help="saved voice for lines without a speaker")
    p.add_argument("--ref-audio", metavar="FILE", help="or a reference recording to clone for them")
    p.add_argument("--ref-text", metavar="TEXT", help="transcript of --ref-audio")
    p.add_argument("--voice-map", action="append", metavar="NAME=VOICE",
                   help="speaker to saved voice (repeat, or a JSON / NAME=VOICE-lines file)")
    p.add_argument("--format", choices=["srt", "vtt", "ass", "ssa", "plain"], help="input format (default: by suffix)")
    p.add_argument("--max-stretch", type=float, default=DEFAULT_MAX_STRETCH, metavar="X",
                   help=f"most pitch-preserving speed-up to fit a slot (1 = none, at most {STRETCH_LIMIT:g}; "
                   f"default {DEFAULT_MAX_STRETCH:g})")
    p.add_argument("--overflow", choices=OVERFLOW_MODES, default="trim",
                   help="a cue still too long: trim at its end (default), shift later cues, or report only "
                   "(cut where the next cue starts)")
    p.add_argument("--only", metavar="LIST", help="regenerate these cues with new seeds, e.g. 12,15-18 (keeps the rest)")
    p.add_argument("--dry-run", action="store_true", help="plan (voices, slots, lengths) and print it; submit nothing")
    add_gen_options(p)
    p.set_defaults(func=cmd_voiceover)
