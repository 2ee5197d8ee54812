namespace Modular.Core.Engine;

/// <summary>The engine refuses to go on (e.g. management refused the setup key); the agent exits with this message.</summary>
public sealed class EngineFatalException : Exception
{
    public EngineFatalException()
    {
    }

    public EngineFatalException(string message)
        : base(message)
    {
    }

    public EngineFatalException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
