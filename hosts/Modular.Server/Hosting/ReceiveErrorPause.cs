using Microsoft.Extensions.Logging;

namespace Modular.Server.Hosting;

/// <summary>
/// How a UDP service's receive loop rides out an unexpected error instead of ending for good: the first error of a run
/// is logged, each one pauses the loop (10 ms, doubling up to a second, so a persistent error does not spin a core), and
/// the first receive that works again is logged once. One per receive loop; not thread-safe.
/// </summary>
internal sealed class ReceiveErrorPause(ILogger logger, string service)
{
    private static readonly TimeSpan First = TimeSpan.FromMilliseconds(10);
    private static readonly TimeSpan Longest = TimeSpan.FromSeconds(1);

    // Zero while receives work.
    private TimeSpan _pause;

    /// <summary>Records a failed receive (<paramref name="error"/> names it in the log) and returns how long to pause.</summary>
    public TimeSpan OnError(string error)
    {
        if (_pause == TimeSpan.Zero)
        {
            logger.LogError("{Service} receive failed ({Error}); retrying", service, error);
            _pause = First;
        }
        else
        {
            _pause = TimeSpan.FromTicks(Math.Min(_pause.Ticks * 2, Longest.Ticks));
        }

        return _pause;
    }

    /// <summary>Records a receive that worked.</summary>
    public void OnSuccess()
    {
        if (_pause != TimeSpan.Zero)
        {
            logger.LogInformation("{Service} receive works again", service);
            _pause = TimeSpan.Zero;
        }
    }
}
