using Modular.Core.Engine;

namespace Modular.Agent.Daemon;

/// <summary>
/// The daemon's handle on its engine for the CLI socket: restart it (`modular debug restart-engine`), and, when the
/// daemon runs with <see cref="TestHooksVariable"/>=1, cancel the next engine at a named start-up step
/// (<see cref="EngineStep"/>) so a test can stop it anywhere in its start-up through the restart path.
/// Thread-safe: the socket's calls arm it, the engine's steps read it.
/// </summary>
internal sealed class EngineControl
{
    /// <summary>Set to 1 to let <see cref="RestartAsync"/> cancel the engine at a step (tests only).</summary>
    public const string TestHooksVariable = "MODULAR_TEST_HOOKS";

    // Set once the supervisor exists (after the socket listens).
    private volatile EngineSupervisor? _supervisor;

    // The step the next engine is cancelled at, as its int (-1: none), and the engine running when it was armed
    // (which is being replaced, so the hook leaves it alone); Interlocked.
    private int _cancelAt = -1;
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
    /// Restarts the running engine (false when none runs). With <paramref name="cancelAt"/>, the next engine is
    /// cancelled when it reaches that step, through the same restart path (so it counts as a restart too).
    /// </summary>
    public (bool Restarted, long RestartsBefore) Restart(EngineStep? cancelAt)
    {
        if (_supervisor is not { } supervisor)
        {
            return (false, 0);
        }

        var before = supervisor.Restarts;
        if (cancelAt is { } step)
        {
            if (!TestHooks)
            {
                throw new InvalidOperationException($"cancelling at a step needs the daemon started with {TestHooksVariable}=1");
            }

            Interlocked.Exchange(ref _armedDuring, supervisor.Generation);
            Interlocked.Exchange(ref _cancelAt, (int)step);
        }

        return (supervisor.RequestRestart("asked to over the daemon socket"), before);
    }

    private async ValueTask BeforeStepAsync(long generation, EngineStep step, CancellationToken cancellationToken)
    {
        var armed = Volatile.Read(ref _cancelAt);
        if (armed < 0 || _supervisor is not { } supervisor || supervisor.Generation != generation || generation <= Interlocked.Read(ref _armedDuring))
        {
            return;
        }

        if ((EngineStep)armed == EngineStep.ManagementBackoff && step == EngineStep.Sync)
        {
            // The way into the backoff with the interface up: management fails right after the interface was built.
            throw new IOException("test hook: management failed after the interface exists");
        }

        if ((int)step != armed || Interlocked.CompareExchange(ref _cancelAt, -1, armed) != armed)
        {
            return;
        }

        supervisor.RequestRestart($"test hook: cancelled at {step}", generation);

        // Held here until the restart cancels this engine: the step never starts.
        await Task.Delay(Timeout.Infinite, cancellationToken);
    }
}
