using Microsoft.Extensions.Logging;

namespace Modular.WireGuard.Uapi;

/// <summary>
/// A UAPI handler that answers "get" from <paramref name="inner"/> and refuses every "set" with
/// EPERM: the agent owns its interface's configuration (management decides peers, keys and ports),
/// so `wg show` and `wg showconf` work on it while a `wg set` from outside is refused instead of
/// silently undone by the next network map. Each refused request logs one warning; what was asked
/// is never logged (a set may carry a private key or a preshared key).
/// </summary>
public sealed class ReadOnlyUapiHandler(IUapiHandler inner, string interfaceName, ILogger logger) : IUapiHandler
{
    /// <summary>The errno a refused set answers: EPERM, which `wg` prints as "Operation not permitted".</summary>
    public const int RefusedErrno = 1;

    public void IpcGet(TextWriter output) => inner.IpcGet(output);

    public int IpcSet(TextReader input)
    {
        logger.LogWarning("Refused a `wg set` on {Interface} (UAPI set, errno {Errno} EPERM): the agent owns this interface's configuration; change it through management",
            interfaceName, RefusedErrno);
        return RefusedErrno;
    }
}
