using Modular.Core.Engine;

namespace Modular.Agent.Daemon;

/// <summary>
/// The daemon's handle on its engine for the CLI socket: restart it (`modular debug restart-engine`), and, when the
/// daemon runs with <see cref="TestHooksVariable"/>=1, cancel the next engines at named start-up steps
/// (<see cref="EngineStep"/>), one step per engine, so a test can stop engines anywhere in their start-up through the
/// restart path inside one daemon. Thread-safe: the socket's calls arm it, the engines' steps read it.
/// </summary>
internal sealed class EngineControl
{
    /// <summary>Set to 1 to let <see cref="Restart"/> cancel engines at steps (tests only).</summary>
    public const string TestHooksVariable = "MODULAR_TEST_HOOKS";

    private readonly Lock _lock = new();

    // Set once the supervisor exists (after the socket listens).
    private volatile EngineSupervisor? _supervisor;

    // Guarded by _lock: the steps the next engines are cancelled at, the first for the next engine; and the engine
    // running when they were armed (being replaced, so the hook leaves it alone).
    private readonly Queue<EngineStep> _cancelAt = new();
    private long _armedDuring;

    public EngineControl(bool testHooks) => TestHooks = testHooks;

    /// <summary>Whether the daemon was started with <see cref="TestHooksVariable"/>=1.</summary>
    public bool TestHooks { get; }

    public void Attach(EngineSupervisor supervisor) => _supervisor = supervisor;

    /// <summary>The seams engine number <paramref name="generation"/> is built with: the host's, plus the step hook in test mode.</summary>
    public EngineSeams SeamsFor(long generation) => !TestHooks ? EngineSeams.Host : new EngineSeams
    {
        BeforeStep = (step, cancellationToken) => BeforeStepAsync(generation, step, cancellationToken),
    };

    /// <summary>
    /// Restarts the running engine (false when none runs). With <paramref name="cancelAt"/>, the next engines are
    /// cancelled one after the other, each when it reaches its step, through the same restart path (each counts as a
    /// restart); the engine after the last one runs normally.
    /// </summary>
    public (bool Restarted, long RestartsBefore) Restart(IReadOnlyList<EngineStep> cancelAt)
    {
        if (_supervisor is not { } supervisor)
        {
            return (false, 0);
        }

        var before = supervisor.Restarts;
        if (cancelAt.Count > 0)
        {
            if (!TestHooks)
            {
                throw new InvalidOperationException($"cancelling at a step needs the daemon started with {TestHooksVariable}=1");
            }

            lock (_lock)
            {
                _cancelAt.Clear();
                foreach (var step in cancelAt)
                {
                    _cancelAt.Enqueue(step);
                }

                _armedDuring = supervisor.Generation;
            }
        }

        return (supervisor.RequestRestart("asked to over the daemon socket"), before);
    }

    private async ValueTask BeforeStepAsync(long generation, EngineStep step, CancellationToken cancellationToken)
    {
        if (_supervisor is not { } supervisor || supervisor.Generation != generation)
        {
            return;
        }

        lock (_lock)
        {
            if (generation <= _armedDuring || !_cancelAt.TryPeek(out var armed))
            {
                return;
            }

            if (armed == EngineStep.ManagementBackoff && step == EngineStep.Sync)
            {
                // The way into the backoff with the interface up: management fails right after the interface was built.
                throw new IOException("test hook: management failed after the interface exists");
            }

            if (step != armed)
            {
                return;
            }

            _cancelAt.Dequeue();
            _armedDuring = generation;
        }

        supervisor.RequestRestart($"test hook: cancelled at {step}", generation);

        // Held here until the restart cancels this engine: the step never starts.
        await Task.Delay(Timeout.Infinite, cancellationToken);
    }
}
