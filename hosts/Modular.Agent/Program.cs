using Modular.Agent.Cli;

return await AgentCommandLine.RunAsync(args);
