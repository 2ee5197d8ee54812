namespace Modular.Core.Engine;

/// <summary>
/// The engine's apply gate: map application, route failover, switches and clearing change peers and routes one at a
/// time. Counts who waits, so a test can tell that a change is queued behind the one in progress.
/// </summary>
#pragma warning disable CA1001 // The semaphore never creates a wait handle (only WaitAsync is used): nothing to dispose.
internal sealed class ApplyGate
#pragma warning restore CA1001
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private int _waiting;

    /// <summary>How many callers wait to enter.</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Enters the gate; dispose the result to leave it.</summary>
    public async Task<Entered> EnterAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waiting);
        try
        {
            await _gate.WaitAsync(cancellationToken);
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }

        return new Entered(_gate);
    }

    /// <summary>Held while inside the gate.</summary>
    internal readonly struct Entered(SemaphoreSlim gate) : IDisposable
    {
        public void Dispose() => gate.Release();
    }
}
