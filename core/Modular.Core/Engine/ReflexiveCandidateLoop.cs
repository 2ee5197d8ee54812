using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Core.Ice;

namespace Modular.Core.Engine;

/// <summary>
/// Learns (and refreshes) the server-reflexive candidate from the STUN server management announced, over the ICE
/// port, so peers behind a NAT get an address they can reach: every 5 s until one is known, then every minute. The
/// candidates are published whole on <see cref="EnginePaths.LocalCandidates"/>; no state of its own, no locks.
/// </summary>
internal sealed class ReflexiveCandidateLoop(ManagementSession management, Func<EngineParts?> parts, ILogger logger, TimeProvider time)
{
    /// <summary>Runs until <paramref name="cancellationToken"/> fires.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var stun = management.Services?.StunAddress ?? "";
            if (stun.Length > 0 && parts() is { } built)
            {
                try
                {
                    var server = await EngineRelayConnector.ResolveAsync(stun, cancellationToken);
                    var mapped = await built.Paths.Agent.QueryStunAsync(server, TimeSpan.FromSeconds(3), cancellationToken);
                    var hosts = CandidateGatherer.HostCandidates(built.Paths.Agent.LocalPort, built.Iface.Name, built.Iface.Address);
                    var candidates = new List<IceCandidate>(hosts);
                    if (mapped is not null && !hosts.Any(h => h.Endpoint.Equals(mapped)))
                    {
                        candidates.Add(new IceCandidate(CandidateType.ServerReflexive, mapped));
                    }

                    built.Paths.LocalCandidates = candidates;
                }
                catch (Exception e) when (e is SocketException or InvalidDataException)
                {
                    logger.LogDebug("STUN {Stun}: {Problem}", stun, e.Message);
                }
            }

            await AgentEngine.DelayAsync(time, parts()?.Paths.LocalCandidates.Any(c => c.Type == CandidateType.ServerReflexive) == true ? TimeSpan.FromSeconds(60) : TimeSpan.FromSeconds(5), cancellationToken);
        }
    }
}
