namespace Modular.Plugins.Netflow;

/// <summary>
/// Wakes one background loop from any thread without blocking or allocating: <see cref="Set"/> releases the loop's
/// <see cref="WaitAsync"/> at most once until the loop calls <see cref="Reset"/>. The loop resets, then checks for
/// work, then waits, so a <see cref="Set"/> between the check and the wait is never lost (at worst one wake is spare).
/// </summary>
internal sealed class WakeSignal : IDisposable
{
    private readonly SemaphoreSlim _semaphore = new(0);
    private int _pending;

    public void Set()
    {
        if (Interlocked.CompareExchange(ref _pending, 1, 0) == 0)
        {
            try
            {
                // SemaphoreSlim runs its async waiters' continuations asynchronously: the loop never runs on this thread.
                _semaphore.Release();
            }
            catch (ObjectDisposedException)
            {
                // The loop is gone (a caller raced the owner's dispose): nothing to wake.
            }
        }
    }

    public void Reset() => Volatile.Write(ref _pending, 0);

    public Task WaitAsync(CancellationToken cancellationToken) => _semaphore.WaitAsync(cancellationToken);

    public void Dispose() => _semaphore.Dispose();
}
