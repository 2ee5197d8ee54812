using Microsoft.Extensions.Logging;

namespace Modular.Core.Network;

/// <summary>The host's network monitor for one engine: rtnetlink in the caller's network namespace, the agent's own interface ignored.</summary>
internal static class NetworkWatch
{
    /// <summary>
    /// Returns the first change that needs a restart (<see cref="NetworkMonitor"/>); its socket and reader are closed
    /// when it returns. When rtnetlink cannot be opened it says so once and waits for <paramref name="cancellationToken"/>.
    /// </summary>
    public static async Task<NetworkChange> WaitForChangeAsync(string ownInterface, ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        var logger = loggerFactory.CreateLogger<NetworkMonitor>();
        NetlinkNetworkEvents events;
        try
        {
            events = new NetlinkNetworkEvents(logger);
        }
        catch (IOException e)
        {
            logger.LogWarning("Network changes are not watched (the engine is not restarted when the default route changes): {Problem}", e.Message);
            await Task.Delay(Timeout.Infinite, cancellationToken);
            throw new OperationCanceledException(cancellationToken);
        }

        using (events)
        {
            var monitor = new NetworkMonitor(events, new HashSet<string>(StringComparer.Ordinal) { ownInterface }, TimeProvider.System, logger);
            return await monitor.WaitForChangeAsync(cancellationToken);
        }
    }
}
